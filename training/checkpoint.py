"""open_clip-style checkpoints ({'epoch','name','state_dict','optimizer'}) written atomically, and reloads."""

from __future__ import annotations

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


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


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
