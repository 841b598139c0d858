"""Where models live: the shipped default, the user cache of pulled checkpoints, or a folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BundleError

DEFAULT_MODEL_NAME = "rsclip-default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
CACHE_ENV = "RSCLIP_GEO_CACHE"


def cache_dir() -> Path:
    """User cache (downloads and exported bundles); $RSCLIP_GEO_CACHE overrides ~/.cache/rsclip-geo."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rsclip-geo"


def pulled_models_dir() -> Path:
    return cache_dir() / "models"


def resolve_model_path(name_or_path: str | os.PathLike | None) -> Path:
    """None/'default'/'rsclip-default' -> shipped bundle; an existing folder; else a pulled model name."""
    if name_or_path is None or str(name_or_path) in ("default", DEFAULT_MODEL_NAME):
        if not (DEFAULT_MODEL_DIR / "model.json").is_file():
            raise BundleError(
                f"{DEFAULT_MODEL_DIR}: the default model bundle is not installed in this copy of rsclip-geo; "
                "pass --model PATH to a bundle folder, or `rsclip-geo models pull NAME`"
            )
        return DEFAULT_MODEL_DIR
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    pulled = pulled_models_dir() / str(name_or_path)
    if pulled.is_dir():
        return pulled
    raise BundleError(
        f"{name_or_path}: not a bundle folder and not a pulled model (looked in {pulled}); "
        "see `rsclip-geo models list` and `rsclip-geo models pull NAME`"
    )
