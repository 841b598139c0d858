"""Weight-space ensembling of the probed and the fine-tuned model (WiSE-FT, Wortsman et al., 2022).

Why: interpolating between the linear-probe endpoint (general ImageNet features) and the fine-tuned
endpoint keeps much of the probe's transfer to unseen class names while keeping most of the
fine-tuned accuracy. The mixing weight is chosen on held-out SEEN images only: the smallest alpha
whose seen-val accuracy is within `tolerance` of the fully fine-tuned model's. Unseen classes are
never looked at.
"""

from __future__ import annotations

import torch


def interpolate(state_a: dict, state_b: dict, alpha: float) -> dict:
    """(1 - alpha) * a + alpha * b for float tensors; integer buffers (BN counters) taken from b."""
    if state_a.keys() != state_b.keys():
        raise KeyError(f"state dicts differ: {sorted(set(state_a) ^ set(state_b))[:5]}")
    return {k: ((1 - alpha) * state_a[k] + alpha * state_b[k]) if state_b[k].is_floating_point() else state_b[k]
            for k in state_b}


def choose_alpha(val_acc: dict[float, float], tolerance: float) -> float:
    """Smallest alpha whose seen-val accuracy is within tolerance of alpha=1 (the fine-tuned model)."""
    best = val_acc[1.0]
    return min(a for a, acc in val_acc.items() if acc >= best - tolerance)


@torch.no_grad()
def wise_select(model, probe_state: dict, ft_state: dict, alphas, tolerance: float, evaluate) -> tuple[float, dict]:
    """Evaluate each alpha with `evaluate(model) -> seen val top-1`; load the chosen mix into model."""
    alphas = sorted(set(alphas) | {1.0})
    acc = {}
    for a in alphas:
        model.load_state_dict(interpolate(probe_state, ft_state, a), strict=True)
        acc[a] = evaluate(model)
    chosen = choose_alpha(acc, tolerance)
    model.load_state_dict(interpolate(probe_state, ft_state, chosen), strict=True)
    return chosen, acc
