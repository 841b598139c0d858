"""The plugin's settings (model, device, batch size, rotations, tile size, output folder), kept in QgsSettings."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from qgis.core import QgsProject, QgsSettings

PREFIX = "rsclip_geo/"
MODEL_SOURCES = ("default", "folder", "pulled")
DEVICES = ("auto", "cpu", "cuda")
# rsclip_geo.raster.tiling.EDGE_POLICIES, default first (copied: the QGIS process never imports the core; a test keeps them equal)
EDGES = ("shift", "pad", "drop")
# rsclip_geo.runtime.encoder.ROTATIONS (copied like EDGES; a test keeps them equal): quarter turns averaged per tile
ROTATIONS = (1, 2, 4)
ROTATION_TITLES = {1: "1: each tile as read", 2: "2: as read and turned 90 degrees (2x slower)",
                   4: "4: all four quarter turns averaged (4x slower, most accurate)"}
EDGE_TITLES = {"shift": "shift the last tile inside (the whole scene is analysed)",
               "pad": "pad (a partial last tile; skipped when mostly outside the scene)",
               "drop": "drop (the edge strip is left out)"}


@dataclass
class Settings:
    """``model_source``: the shipped default bundle, a bundle folder, or a pulled model name."""

    model_source: str = "default"
    model_folder: str = ""
    model_name: str = ""
    device: str = "auto"
    batch_size: int = 16
    rotations: int = 1  # quarter turns averaged per tile (ROTATIONS): 2 or 4 are slower and more accurate
    tile_size_m: float = 0.0  # 0: the model's input size in pixels
    top: int = 20
    standout: float = 0.0  # search: only hits this many standard deviations above the mean score (0: top N only)
    output_folder: str = ""  # empty: <project folder>/rsclip-geo, or a folder in the QGIS profile

    @classmethod
    def load(cls) -> "Settings":
        s = QgsSettings()
        out = cls()
        for f in fields(cls):
            default = getattr(out, f.name)
            value = s.value(PREFIX + f.name, default)
            try:
                setattr(out, f.name, type(default)(value))
            except (TypeError, ValueError):  # a hand-edited or older value: keep the default
                pass
        return out.checked()

    def save(self) -> None:
        s = QgsSettings()
        for key, value in asdict(self.checked()).items():
            s.setValue(PREFIX + key, value)

    def checked(self) -> "Settings":
        if self.model_source not in MODEL_SOURCES:
            self.model_source = "default"
        if self.device not in DEVICES:
            self.device = "auto"
        self.batch_size = max(1, int(self.batch_size))
        self.rotations = int(self.rotations) if int(self.rotations) in ROTATIONS else 1
        self.tile_size_m = max(0.0, float(self.tile_size_m))
        self.top = max(1, int(self.top))
        self.standout = min(10.0, max(0.0, float(self.standout)))
        return self

    def model(self) -> str | None:
        """What ``rsclip_geo.load_model`` takes: None (default bundle), a folder, or a pulled name."""
        if self.model_source == "folder" and self.model_folder:
            return self.model_folder
        if self.model_source == "pulled" and self.model_name:
            return self.model_name
        return None

    def runs_folder(self) -> Path:
        """Where run outputs go: the chosen folder, else beside the project, else in the QGIS profile."""
        if self.output_folder:
            return Path(self.output_folder)
        home = QgsProject.instance().homePath()
        if home:
            return Path(home) / "rsclip-geo"
        from qgis.core import QgsApplication

        return Path(QgsApplication.qgisSettingsDirPath()) / "rsclip-geo-runs"


def pulled_models_dir() -> Path:
    """Where `rsclip-geo models pull` puts bundles: rsclip_geo.runtime.paths.pulled_models_dir(), copied because the QGIS
    process never imports the core ($RSCLIP_GEO_CACHE, else $XDG_CACHE_HOME or ~/.cache, + rsclip-geo/models;
    a test keeps the two equal). The worker inherits QGIS's environment, so it resolves the same folder."""
    env = os.environ.get("RSCLIP_GEO_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rsclip-geo" / "models"


def pulled_model_names() -> list[str]:
    """Bundles pulled into the cache (folders with a model.json), by name."""
    folder = pulled_models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "model.json").is_file())
