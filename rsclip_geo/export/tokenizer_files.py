"""Write an open_clip tokenizer into a model bundle as torch-free files.

The runtime (rsclip_geo.runtime.tokenizers) can only reproduce what ``TextSpec`` can
describe, so this refuses tokenizer settings it cannot express (other text
cleaning, token-dropping reductions, sep stripping, left padding) instead of
writing a bundle that would tokenize differently. After writing, the files
are read back and checked against the original tokenizer on probe texts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..runtime.bundle import TextSpec
from ..errors import MissingDependencyError, OutputError, TokenizerError
from ..runtime.tokenizers import CLIP_BPE_FILE, HF_TOKENIZER_FILE, ClipBpeTokenizer, default_bpe_path, load_tokenizer

# Short, long (truncated), multilingual, entity and whitespace cases: enough to catch a wrong setting.
PROBE_TEXTS = (
    "a satellite photo of a dense residential area.",
    "",
    "  Airport   RUNWAY with 3 planes &amp; a hangar!  ",
    "une photo aérienne d'un port, 港口的卫星图像, Hafen 🚢",
    " ".join(["farmland next to a river and a bridge"] * 40),
)


def _open_clip_tokenizer_module():
    try:
        import open_clip.tokenizer as oct
    except ImportError as exc:
        raise MissingDependencyError(
            "writing tokenizer files needs open_clip; pip install 'rsclip-geo[export]'"
        ) from exc
    return oct


def _context_length(tokenizer) -> int:
    ctx = getattr(tokenizer, "context_length", None)
    if not isinstance(ctx, int) or ctx < 2:
        raise TokenizerError(f"{type(tokenizer).__name__} has no usable context_length ({ctx!r})")
    return ctx


def _target(out_dir: Path, name: str, overwrite: bool) -> Path:
    target = out_dir / name
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: already exists (pass overwrite=True to replace it)")
    return target


def _check_round_trip(original, spec: TextSpec, target: Path) -> None:
    """Read the written file back and demand the original tokenizer's ids."""
    ours = load_tokenizer(spec, target)(list(PROBE_TEXTS))
    theirs = np.asarray(original(list(PROBE_TEXTS)), dtype=np.int64)
    if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
        bad = [i for i in range(len(PROBE_TEXTS))
               if ours.shape != theirs.shape or not np.array_equal(ours[i], theirs[i])]
        target.unlink(missing_ok=True)
        raise TokenizerError(f"{target}: written tokenizer does not reproduce {type(original).__name__} ids "
                             f"(probe texts {bad}); file removed")


def _write_clip_bpe(tokenizer, oct, out_dir: Path, overwrite: bool) -> TextSpec:
    name = type(tokenizer).__name__
    if getattr(tokenizer, "reduction_fn", None) is not None:
        raise TokenizerError(f"{name} uses a token-reduction mask; rsclip-geo bundles only support plain truncation")
    if getattr(tokenizer, "clean_fn", None) is not oct._clean_lower:
        raise TokenizerError(f"{name} uses a text cleaning other than clean='lower'; not supported in bundles")
    ctx = _context_length(tokenizer)
    vocab = default_bpe_path()
    if ClipBpeTokenizer(vocab, ctx).encoder != getattr(tokenizer, "encoder", None):
        raise TokenizerError(f"{name} vocabulary differs from the CLIP BPE vocabulary {vocab} "
                             "(custom bpe_path or additional special tokens are not supported)")
    target = _target(out_dir, CLIP_BPE_FILE, overwrite)
    tmp = out_dir / (CLIP_BPE_FILE + ".tmp")
    shutil.copyfile(vocab, tmp)
    os.replace(tmp, target)
    spec = TextSpec(context_length=ctx, tokenizer="clip_bpe", tokenizer_file=CLIP_BPE_FILE, pad_id=0)
    _check_round_trip(tokenizer, spec, target)
    return spec


def _write_hf(tokenizer, oct, out_dir: Path, overwrite: bool) -> TextSpec:
    name = type(tokenizer).__name__
    if getattr(tokenizer, "tokenizer_mode", ""):
        raise TokenizerError(f"{name} tokenizer_mode={tokenizer.tokenizer_mode!r} is not supported in bundles")
    if getattr(tokenizer, "strip_sep_token", False):
        raise TokenizerError(f"{name} strip_sep_token=True is not supported in bundles")
    if getattr(tokenizer, "clean_fn", None) is not oct._clean_whitespace:
        raise TokenizerError(f"{name} uses a text cleaning other than clean='whitespace'; not supported in bundles")
    ctx = _context_length(tokenizer)
    hf = tokenizer.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(f"{type(hf).__name__} is a slow (Python) tokenizer; a fast tokenizer with "
                             "a tokenizer.json is needed")
    for side in ("padding_side", "truncation_side"):
        if getattr(hf, side, "right") != "right":
            raise TokenizerError(f"{type(hf).__name__} {side}={getattr(hf, side)!r}; only 'right' is supported")
    if getattr(hf, "split_special_tokens", False):
        raise TokenizerError(f"{type(hf).__name__} split_special_tokens=True cannot be stored in tokenizer.json")
    pad_id = hf.pad_token_id
    if pad_id is None:
        raise TokenizerError(f"{type(hf).__name__} has no pad token; cannot pad to context length {ctx}")

    from tokenizers import Tokenizer

    # A copy without the padding/truncation state that transformers leaves on the backend:
    # the runtime sets both from model.json.
    clean = Tokenizer.from_str(backend.to_str())
    clean.no_padding()
    clean.no_truncation()
    target = _target(out_dir, HF_TOKENIZER_FILE, overwrite)
    tmp = out_dir / (HF_TOKENIZER_FILE + ".tmp")
    clean.save(str(tmp))
    os.replace(tmp, target)
    spec = TextSpec(context_length=ctx, tokenizer="hf_tokenizer_json", tokenizer_file=HF_TOKENIZER_FILE,
                    pad_id=int(pad_id))
    _check_round_trip(tokenizer, spec, target)
    return spec


def write_tokenizer_files(tokenizer, out_dir: str | os.PathLike, *, overwrite: bool = False) -> TextSpec:
    """Write ``tokenizer`` (an open_clip tokenizer object) into ``out_dir``; return its ``TextSpec``.

    ``SimpleTokenizer`` -> ``bpe_simple_vocab_16e6.txt.gz`` (kind ``clip_bpe``, pad 0);
    ``HFTokenizer`` (fast) -> ``tokenizer.json`` (kind ``hf_tokenizer_json``, pad = its pad_token_id).
    ``context_length`` is the tokenizer's. An existing file is kept unless ``overwrite``.
    """
    oct = _open_clip_tokenizer_module()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, oct.SimpleTokenizer):
        return _write_clip_bpe(tokenizer, oct, out_dir, overwrite)
    if isinstance(tokenizer, oct.HFTokenizer):
        return _write_hf(tokenizer, oct, out_dir, overwrite)
    raise TokenizerError(f"cannot write a {type(tokenizer).__name__} into a bundle: supported are open_clip "
                         "SimpleTokenizer (CLIP BPE) and HFTokenizer (Hugging Face fast tokenizers)")
