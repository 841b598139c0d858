"""Model construction for a training run: resolved config written to the run folder, towers locked per config."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from training import model as model_lib


def build_run_model(cfg: dict, out_dir: Path | None):
    """(model, tokenizer, resolved_model_config); writes OUT/model_config.json when out_dir is given."""
    m = cfg["model"]
    model_cfg = model_lib.resolve_config(model_lib.load_config(m["config"]), image_size=m["image_size"],
                                         context_length=m["context_length"], timm_proj=m["timm_proj"])
    model, tokenizer = model_lib.create_model(model_cfg, pretrained_image=m["pretrained_image"])
    if out_dir is not None:
        model_lib.write_config(model_cfg, Path(out_dir) / "model_config.json", model_lib.PREPROCESS_CFG)
    with torch.no_grad():
        model.logit_scale.fill_(m["init_logit_scale"])
    model.logit_scale.requires_grad_(bool(m["learn_logit_scale"]))
    apply_locks(model, cfg["lock"])
    return model, tokenizer, model_cfg


def apply_locks(model, lock: dict) -> None:
    """Freeze towers as configured (unlocking the last N layers / groups when asked)."""
    if lock["text"]:
        model.lock_text_tower(unlocked_layers=lock["text_unlocked_layers"],
                              freeze_layer_norm=lock["text_freeze_layer_norm"])
        if not lock["text_unlocked_layers"]:  # full LiT lock: the text projection too
            for p in model.text.parameters():
                p.requires_grad_(False)
    if lock["image"]:
        model.lock_image_tower(unlocked_groups=lock["image_unlocked_groups"],
                               freeze_bn_stats=lock["image_freeze_bn_stats"])


def text_fully_locked(model) -> bool:
    return not any(p.requires_grad for p in model.text.parameters())


def clamp_logit_scale(model, max_scale: float) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(max_scale))
