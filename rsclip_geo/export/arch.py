"""Build the open_clip model an export needs: architecture lookup, activation choice, preprocessing.

QuickGELU vs GELU has no parameters, so a checkpoint loads into either without a
sound, and the wrong one quietly degrades every embedding. For towers built by
open_clip itself (its transformer and ModifiedResNet) the choice must therefore
come from the caller, the catalog, or an architecture that fixes it (``*-quickgelu``);
timm image towers and Hugging Face text towers bring their own activation.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime.bundle import INTERPOLATIONS, ImageSpec
from ..errors import BundleError
from ._deps import drop_root_messages, require_torch

log = logging.getLogger(__name__)

ACTIVATIONS = ("quick_gelu", "gelu")

_ACTIVATION_HELP = (
    "QuickGELU vs GELU is not stored in a checkpoint and a wrong choice loads silently but degrades "
    "every embedding. Use --activation quick_gelu for weights derived from OpenAI CLIP (OpenAI, RemoteCLIP, "
    "GeoRSCLIP, most fine-tunes started from pretrained='openai'), --activation gelu for weights trained "
    "with open_clip's plain (non '-quickgelu') configs, e.g. LAION/DataComp; or pass an architecture whose "
    "name ends in -quickgelu."
)


@dataclass
class BuiltModel:
    """An open_clip model with random weights plus what the bundle must record about it."""

    model: Any
    arch: str  # the name registered with open_clip
    config: dict
    activation: str  # "quick_gelu", "gelu" or "" (towers define their own)
    image_tower: str
    text_tower: str
    tokenizer: Any
    image: ImageSpec
    preprocess_source: str = ""

    @property
    def image_is_transformer(self) -> bool:
        """A ViT has one convolution (the patch embedding); ResNets and other CNNs have many."""
        import torch.nn as nn

        return sum(isinstance(m, nn.Conv2d) for m in self.model.visual.modules()) <= 1


def resolve_arch(arch: str) -> tuple[str, dict, dict]:
    """(registered name, config, preprocess_cfg from the file) for a model name or a model-config JSON file."""
    require_torch()
    import open_clip

    if arch.startswith(("hf-hub:", "local-dir:")):
        raise BundleError(f"architecture {arch!r}: pass an open_clip model name or the path of an open_clip "
                          "model-config JSON file (e.g. a downloaded open_clip_config.json), not a hub reference")
    path = Path(arch).expanduser()
    preprocess: dict = {}
    if arch.endswith(".json") or path.is_file():
        if not path.is_file():
            raise BundleError(f"{path}: open_clip model config file does not exist")
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: cannot read model config JSON ({exc})") from exc
        if isinstance(cfg, dict) and "model_cfg" in cfg:  # an open_clip_config.json from the HF hub
            preprocess = dict(cfg.get("preprocess_cfg") or {})
            cfg = cfg["model_cfg"]
        for key in ("embed_dim", "vision_cfg", "text_cfg"):
            if not isinstance(cfg, dict) or key not in cfg:
                raise BundleError(f"{path}: missing field '{key}' (an open_clip model config needs embed_dim, "
                                  "vision_cfg, text_cfg)")
        name = path.stem
        open_clip.add_model_config(path)
        # open_clip registers configs by file stem; make sure ours is the one it will build
        open_clip.factory._MODEL_CONFIGS[name] = cfg
        return name, json.loads(json.dumps(cfg)), preprocess
    name = arch.replace("/", "-")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise BundleError(f"unknown architecture {arch!r}: not an open_clip model name nor a config .json file.{hint}")
    return name, cfg, preprocess


def preprocess_overrides(name: str, from_file: dict) -> tuple[dict, str]:
    """Mean/std/interpolation for ``name`` and where they come from.

    A checkpoint file carries no preprocessing, so take it from the config file, else from open_clip's
    pretrained tags of this architecture when they all agree, else open_clip's defaults (OpenAI CLIP).
    """
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if from_file:
        return from_file, "preprocess_cfg of the model-config file"
    keys = ("mean", "std", "interpolation")
    seen = {}
    for tag in list_pretrained_tags_by_model(name):
        cfg = get_pretrained_cfg(name, tag)
        if all(k in cfg for k in keys):
            seen.setdefault(tuple(tuple(v) if isinstance(v, (list, tuple)) else v for v in (cfg[k] for k in keys)),
                            []).append(tag)
    if len(seen) == 1:
        values = next(iter(seen))
        return dict(zip(keys, values)), f"open_clip pretrained tags of {name} (all agree)"
    if len(seen) > 1:
        log.warning("pretrained tags of %s use different preprocessing (%s); using open_clip's defaults "
                    "(OpenAI CLIP mean/std, bicubic)", name, "; ".join(f"{'/'.join(t)}: {v}" for v, t in seen.items()))
        return {}, f"open_clip defaults (pretrained tags of {name} disagree)"
    return {}, "open_clip defaults (OpenAI CLIP mean/std, bicubic)"


def decide_activation(arch: str, cfg: dict, activation: str | None) -> str:
    """The activation to build with ("" where the towers define their own); refuse to guess."""
    if activation is not None and activation not in ACTIVATIONS:
        raise BundleError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    timm_image = bool(cfg.get("vision_cfg", {}).get("timm_model_name"))
    hf_text = bool(cfg.get("text_cfg", {}).get("hf_model_name"))
    if timm_image and hf_text:
        if activation:
            log.warning("--activation %s ignored: %s uses a timm image tower and a Hugging Face text tower, "
                        "which define their own activations", activation, arch)
        return ""
    arch_quick = bool(cfg.get("quick_gelu", False))
    if activation is None:
        if arch_quick:
            return "quick_gelu"
        raise BundleError(f"architecture {arch!r} needs --activation quick_gelu or --activation gelu. "
                          + _ACTIVATION_HELP)
    if activation == "gelu" and arch_quick:
        raise BundleError(f"architecture {arch!r} is a QuickGELU config but --activation gelu was given; "
                          f"use the plain architecture name (without -quickgelu) for GELU weights")
    return activation


def _image_spec(model, arch: str) -> ImageSpec:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise BundleError(f"architecture {arch!r} has a non-square input {tuple(size)}; bundles need square")
        size = size[0]
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in INTERPOLATIONS:
        raise BundleError(f"architecture {arch!r} uses interpolation {interpolation!r}; "
                          f"bundles support {INTERPOLATIONS}")
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise BundleError(f"architecture {arch!r}: preprocessing mean/std are not RGB triples ({mean}, {std})")
    return ImageSpec(size=int(size), mean=mean, std=std, interpolation=interpolation)  # type: ignore[arg-type]


def _towers(cfg: dict) -> tuple[str, str]:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if v.get("timm_model_name"):
        image = f"timm:{v['timm_model_name']}"
    elif isinstance(v.get("layers"), (list, tuple)):
        image = "open_clip:modified_resnet"
    else:
        image = "open_clip:vision_transformer"
    text = f"hf:{t['hf_model_name']}" if t.get("hf_model_name") else "open_clip:text_transformer"
    return image, text


def build_model(arch: str, activation: str | None, preprocess: dict | None = None) -> BuiltModel:
    """An eval-mode, randomly initialised open_clip model for ``arch`` (weights are loaded later).

    ``preprocess`` (mean/std/interpolation) overrides what the architecture would use.
    """
    require_torch()
    import open_clip

    name, cfg, file_preprocess = resolve_arch(arch)
    act = decide_activation(name, cfg, activation)
    if preprocess:
        unknown = set(preprocess) - {"mean", "std", "interpolation"}
        if unknown:
            raise BundleError(f"unknown preprocessing keys {sorted(unknown)}; use mean, std, interpolation")
        preprocess, preprocess_source = dict(preprocess), "given by the caller"
    else:
        preprocess, preprocess_source = preprocess_overrides(name, file_preprocess)
    try:
        # weights are loaded strictly afterwards; open_clip's "initialized randomly" warning would mislead
        with drop_root_messages("No pretrained weights loaded"):
            model = open_clip.create_model(
                name, pretrained=None, load_weights=False, pretrained_image=False, pretrained_text=False,
                force_quick_gelu=(act == "quick_gelu"), force_preprocess_cfg=preprocess or None, device="cpu",
            )
    except Exception as exc:  # open_clip/timm/transformers raise many kinds
        raise BundleError(f"cannot build open_clip architecture {name!r} ({type(exc).__name__}: {exc})") from exc
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise BundleError(f"cannot build the tokenizer of architecture {name!r} ({type(exc).__name__}: {exc})") \
            from exc
    image_tower, text_tower = _towers(cfg)
    return BuiltModel(model=model, arch=name, config=cfg, activation=act, image_tower=image_tower,
                      text_tower=text_tower, tokenizer=tokenizer, image=_image_spec(model, name),
                      preprocess_source=preprocess_source)
