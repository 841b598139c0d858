"""AdamW parameter groups (trunk / heads / temperature) and a warmup + cosine learning-rate schedule.

Why separate groups: the ImageNet trunk needs a smaller step than the freshly initialised
projection, and the temperature needs a larger one or it barely moves (seen in the prototype).
"""

from __future__ import annotations

import math

import torch


def param_groups(model, optim_cfg: dict) -> list[dict]:
    """Trainable params split by role; no weight decay on biases, norms and the temperature."""
    groups = {k: {"decay": [], "no_decay": []} for k in ("trunk", "head")}
    scale = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name == "logit_scale":
            scale.append(p)
            continue
        role = "trunk" if name.startswith("visual.trunk.") else "head"
        groups[role]["no_decay" if p.ndim < 2 else "decay"].append(p)
    lrs = {"trunk": optim_cfg["trunk_lr"], "head": optim_cfg["lr"]}
    out = []
    for role, parts in groups.items():
        for kind, params in parts.items():
            if params:
                wd = optim_cfg["weight_decay"] if kind == "decay" else 0.0
                out.append({"params": params, "lr": lrs[role], "base_lr": lrs[role], "weight_decay": wd,
                            "name": f"{role}/{kind}"})
    if scale:
        out.append({"params": scale, "lr": optim_cfg["logit_scale_lr"], "base_lr": optim_cfg["logit_scale_lr"],
                    "weight_decay": 0.0, "name": "logit_scale"})
    return out


def make_optimizer(model, optim_cfg: dict) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, optim_cfg), betas=tuple(optim_cfg["betas"]), eps=optim_cfg["eps"])


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to 1, then cosine decay to min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
