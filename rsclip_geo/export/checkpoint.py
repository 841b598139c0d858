"""Read open_clip checkpoint files in the layouts found in the wild, and load them strictly.

Layouts: a plain state dict; an open_clip training checkpoint ``{'epoch', 'name',
'state_dict', 'optimizer', ...}``; either with DDP ``module.`` prefixes; a
``.safetensors`` file; OpenAI's TorchScript archives (their tensors read by
``jit_archive`` without running the archive's code, never ``torch.jit.load``). Pickles
are read with ``weights_only=True``: a checkpoint is data, never code to run.

Loading is strict because a half-loaded model exports without complaint and
then embeds nonsense.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from ..errors import BundleError
from ._deps import require_torch
from .jit_archive import read_torchscript_state

log = logging.getLogger(__name__)

# Non-weight entries OpenAI's JIT archives keep in their state dict.
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# BatchNorm step counters: buffers with no effect in eval mode; some converted checkpoints drop them.
_IGNORABLE_MISSING_SUFFIX = ".num_batches_tracked"
_SHOW = 5  # offending keys shown in an error


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zips holding ``<root>/code/`` and ``<root>/constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _read_raw(path: Path):
    torch = require_torch()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise BundleError(f"{path}: not a readable safetensors file ({exc})") from exc
    if _is_torchscript_archive(path):
        state = read_torchscript_state(path)  # never torch.jit.load: it runs the archive's code
        for key in _JIT_EXTRA_KEYS:
            state.pop(key, None)
        return state
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(
            f"{path}: cannot read as a torch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Expected a state dict, an open_clip training "
            "checkpoint, a .safetensors file or an OpenAI TorchScript archive."
        ) from exc


def _unwrap(obj, path: Path) -> dict:
    """The state dict inside ``obj`` (plain, or under 'state_dict'), DDP prefixes removed."""
    torch = require_torch()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise BundleError(f"{path}: holds a {type(obj).__name__}, not a (non-empty) state dict of tensors")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise BundleError(
            f"{path}: entries {not_tensors[:_SHOW]} are not tensors; is this a training checkpoint without a "
            "'state_dict' entry?"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_checkpoint_state(path) -> dict:
    """The checkpoint's weights as ``{name: tensor}`` (on CPU), whatever the file layout."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: checkpoint file does not exist")
    return _unwrap(_read_raw(path), path)


def _adapt_to_model(model, state: dict) -> dict:
    """open_clip's own compatibility fixes (as in open_clip.factory.load_checkpoint), minus resizing."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    # Non-persistent buffers (open_clip's attn_mask, transformers' position_ids) are derived constants;
    # TorchScript archives and older transformers still save them.
    model_keys = set(model.state_dict())
    derived = {name for name, _ in model.named_buffers()} - model_keys
    for key in [k for k in state if k in derived or (k.endswith("embeddings.position_ids") and k not in model_keys)]:
        del state[key]
    return state


def _fmt(keys) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_strict(model, state: dict, arch: str, path) -> None:
    """Load ``state`` into ``model``; any missing/unexpected key or shape mismatch is a BundleError."""
    state = _adapt_to_model(model, dict(state))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_IGNORABLE_MISSING_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_fmt(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (checkpoint vs model): {_fmt(shapes)}")
        raise BundleError(
            f"{path}: checkpoint does not match architecture {arch!r}: " + "; ".join(parts)
            + ". Is --arch right (e.g. RN50 vs ViT-B-32, image size, a custom config)?"
        )
    for key in [k for k in expected if k not in state]:  # only ignorable BatchNorm counters remain
        state[key] = expected[key]
    model.load_state_dict(state, strict=True)
