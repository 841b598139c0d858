"""open_clip-style checkpoints ({'epoch','name','state_dict','optimizer'}) written atomically, and reloads.

Reloads use ``torch.load(weights_only=True)``: a checkpoint is data, never code to run. What ours
hold (tensors, the optimizer's state dict, ints, floats, strings, bools, None, tuples, lists and
dicts of those) is all allowed by torch's weights-only unpickler; nothing needs allow-listing.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def save_checkpoint(path: Path, epoch: int, name: str, model, optimizer=None, extra: dict | None = None) -> Path:
    """Write to a temp file in the same folder, then os.replace, so a crash never leaves half a file."""
    path = Path(path)
    state = {"epoch": epoch, "name": name, "state_dict": model.state_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if extra:
        state.update(extra)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


class CheckpointError(RuntimeError):
    """A checkpoint file that is not one of ours: unreadable, or holding objects beyond plain data."""


def load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # what the weights-only unpickler raises for foreign objects
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{path}: refused: it holds objects beyond tensors and plain data, which a weights-only load "
            f"does not run ({first[0] if first else type(exc).__name__}). Only load checkpoints written by "
            "training/ (save_checkpoint)") from exc
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'state_dict' entry)")
    return state


def load_run_model(run: Path, checkpoint: Path | None = None):
    """Rebuild the model from RUN/model_config.json and load a checkpoint strictly. Returns (model, tok, cfg)."""
    from training.model import create_model, load_config

    cfg = load_config(Path(run) / "model_config.json")
    model, tokenizer = create_model(cfg, pretrained_image=False)
    state = load_checkpoint(checkpoint or Path(run) / "checkpoint_last.pt")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state["state_dict"].items()}
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model, tokenizer, cfg
