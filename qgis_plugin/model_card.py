"""What a model bundle is, for the panel's model card: read from its model.json (and MODEL_CARD.md), never by
loading it (the QGIS process imports neither the core nor onnxruntime)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from .deps import VENDOR_FOLDER


def default_model_dir() -> Path | None:
    """The shipped default bundle: the zip's vendored core, else an installed rsclip_geo (found, not imported)."""
    vendored = VENDOR_FOLDER / "rsclip_geo" / "models" / "default"
    if (vendored / "model.json").is_file():
        return vendored
    spec = importlib.util.find_spec("rsclip_geo")  # a top-level package: located, not executed
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "models" / "default"
        if (folder / "model.json").is_file():
            return folder
    return None


def model_dir(source: str, folder: str = "", name: str = "") -> Path | None:
    """The bundle folder the settings choose (None when it does not exist)."""
    from .settings import pulled_models_dir

    if source == "folder":
        path = Path(folder) if folder else None
    elif source == "pulled":
        path = pulled_models_dir() / name if name else None
    else:
        path = default_model_dir()
    return path if path is not None and (path / "model.json").is_file() else None


def _trained_on(folder: Path) -> str:
    """The start of MODEL_CARD.md's 'Training data' section, if the bundle has one."""
    card = folder / "MODEL_CARD.md"
    if not card.is_file():
        return ""
    match = re.search(r"^## Training data\s*\n(.+?)(?:\n\n|\Z)", card.read_text(encoding="utf-8"), re.S | re.M)
    if not match:
        return ""
    text = " ".join(match.group(1).replace("`", "").split())
    return text if len(text) <= 140 else text[:140].rsplit(" ", 1)[0] + " ..."


def card_text(folder: Path | None) -> str:
    """A few lines: name and architecture, input size, trained on, zero-shot figure, size on disk, licence."""
    if folder is None:
        return "no model bundle here: choose one in Settings"
    try:
        meta = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{folder}: model.json cannot be read ({exc})"
    size_mb = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
    lines = [f"{meta.get('name', folder.name)} ({meta.get('architecture', 'unknown architecture')})",
             f"input {meta.get('image', {}).get('size', '?')} px tiles, {size_mb:.0f} MB"]
    trained = _trained_on(folder)
    if trained:
        lines.append(f"trained on: {trained}")
    evaluation = (meta.get("card") or {}).get("evaluation") or {}
    aid30 = evaluation.get("aid30_zero_shot") or {}
    seen = evaluation.get("zero_shot_seen_heldout_24way") or {}
    if "top1" in aid30:
        lines.append(f"AID zero-shot top-1 (held-out images, 30 classes): {aid30['top1']:.3f}")
    elif "top1" in seen:
        lines.append(f"AID zero-shot top-1 (held-out images of its 24 classes): {seen['top1']:.3f}")
    lines.append(f"licence: {meta.get('license') or 'not recorded'}")
    return "\n".join(lines)
