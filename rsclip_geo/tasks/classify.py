"""Zero-shot tile labelling: every valid tile of a scene gets the label whose prompts it matches best."""

from __future__ import annotations

import logging
import time
import warnings
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OptionError
from ..runtime.encoder import ClipModel, load_model
from ..runtime.prompts import Label, parse_labels
from ..raster.scene import Scene
from ..embeddings.encode import ProgressCallback, encode_scene
from ..raster.tiling import TilePlan, TileSpec

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class SingleLabelWarning(UserWarning):
    """tile_classify with one label: the softmax over one class is 1.0 everywhere (meaningless)."""


@dataclass
class RunSummary:
    """What a run did, for the end-of-run report."""

    scene: str
    tiles_total: int = 0
    tiles_encoded: int = 0
    tiles_skipped: int = 0
    seconds: float = 0.0
    provider: str = ""
    model: str = ""
    tile_width_px: int = 0
    tile_height_px: int = 0
    extra: dict = field(default_factory=dict)
    skipped_outside: int = 0  # of tiles_skipped: mostly outside the scene (edge 'pad'); the rest: invalid pixels

    def skipped_text(self) -> str:
        """'3 skipped (1 mostly outside the scene with edge 'pad', 2 with too many invalid pixels)': why, not just how many."""
        if not self.tiles_skipped:
            return "0 skipped"
        why = []
        if self.skipped_outside:
            why.append(f"{self.skipped_outside} mostly outside the scene with edge 'pad'")
        if self.tiles_skipped - self.skipped_outside:
            why.append(f"{self.tiles_skipped - self.skipped_outside} with too many invalid pixels")
        return f"{self.tiles_skipped} skipped ({', '.join(why)})"

    def describe(self) -> str:
        rate = self.tiles_encoded / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.scene}: {self.tiles_encoded} tiles labelled, {self.skipped_text()} "
                f"of {self.tiles_total}; tile {self.tile_width_px}x{self.tile_height_px} px; "
                f"{self.seconds:.1f} s ({rate:.1f} tiles/s) on {self.provider} with model {self.model}")


@dataclass
class Classification:
    """Tile labels of one scene: ``frame`` (one row per labelled tile, see ``tile_classify``) and what writers need.

    ``labels``: the label names in the order given; ``class_names``: the class raster's values 0..n-1 (the labels,
    plus 'unknown' when ``min_score`` > 0 can give it).
    """

    frame: object = field(repr=False)  # geopandas.GeoDataFrame
    labels: list[str]
    plan: TilePlan = field(repr=False)
    summary: RunSummary
    min_score: float = 0.0

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def class_names(self) -> list[str]:
        return list(self.labels) + ([UNKNOWN] if self.min_score > 0 else [])

    def label_counts(self) -> dict[str, int]:
        """Tiles per label (including 'unknown'), most frequent first."""
        return {str(k): int(v) for k, v in self.frame["label"].value_counts().items()}

    def class_grid(self, nodata: int = 255) -> np.ndarray:
        """One pixel per tile of the plan (rows x cols, on ``plan.grid_transform``): the index of the tile's
        label in ``class_names``; skipped tiles are nodata."""
        grid = np.full((self.plan.n_rows, self.plan.n_cols), nodata, dtype=np.uint8)
        index = {name: i for i, name in enumerate(self.class_names)}
        for row, col, label in zip(self.frame["row"], self.frame["col"], self.frame["label"]):
            if label in index:
                grid[row, col] = index[label]
        return grid

    def class_raster(self, nodata: int = 255) -> tuple[np.ndarray, object]:
        """(classes, transform) on the scene's own grid: each pixel the class of the tile owning it."""
        from ..raster.tile_grid import on_scene_grid

        return on_scene_grid(self.plan, self.class_grid(nodata), nodata)

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The tiles as a vector file (.gpkg, .parquet, .geojson), atomically."""
        from ..outputs.writers import write_vector

        return write_vector(self.frame, path, overwrite=overwrite)

    def write_class_raster(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The class raster (.tif, COG with a colour table and the class names) on the scene's grid."""
        from ..outputs.writers import write_class_raster

        classes, transform = self.class_raster()
        return write_class_raster(path, classes, transform, self.plan.crs, self.class_names, overwrite=overwrite)


def tile_classify(scene: str | Path | Scene, labels: str | Sequence[str | Label], model: ClipModel | str | None = None,
                  tile: TileSpec | None = None, bands: Sequence[int] | None = None, top_k: int = 3,
                  min_score: float = 0.0, max_invalid: float = 0.5, templates: Sequence[str] | None = None,
                  progress: ProgressCallback | None = None, **scene_options) -> Classification:
    """Label each tile of ``scene`` with one of ``labels``; returns a Classification.

    Its ``frame`` (a GeoDataFrame in the scene CRS) has the columns row, col, label (or 'unknown' below
    ``min_score``), score, label_1..k / score_1..k (top-k), valid_frac, geometry (tile footprint);
    ``summary`` is a RunSummary, ``plan`` the tile plan, ``labels`` the label names in order.
    """
    import geopandas as gpd

    labels = parse_labels(labels)
    if len(labels) == 1:
        warnings.warn(
            f"one label ({labels[0].name!r}): probabilities are a softmax over the labels, so with one label every "
            "tile gets probability 1.0 and the label says nothing; add a background/negative label (e.g. "
            f"'{labels[0].name},other land cover') or use `search` to rank tiles by similarity",
            SingleLabelWarning, stacklevel=2)
    if not 0 <= min_score <= 1:
        raise OptionError(f"min_score must be in [0, 1], got {min_score}")
    top_k = max(1, min(int(top_k), len(labels)))
    model = model if isinstance(model, ClipModel) else load_model(model)
    class_emb = model.class_embeddings(labels, templates)  # before reading: label errors come first
    own = not isinstance(scene, Scene)
    scene = Scene(scene, bands=bands, **scene_options) if own else scene
    try:
        plan = scene.plan(tile or TileSpec(), model.bundle.image.size)
        start = time.perf_counter()
        encoded = encode_scene(scene, plan, model, max_invalid, progress)
        tiles, emb, frac = encoded.tiles, encoded.embeddings, encoded.valid_fraction
        probs = model.probabilities(emb, class_emb)
        outside, _ = plan.skip_reasons(((t.row, t.col) for t in tiles), max_invalid)
        summary = RunSummary(str(scene.path), len(plan), len(tiles), encoded.stats.skipped, time.perf_counter() - start,
                             model.provider, model.run_label, plan.tile_width, plan.tile_height,
                             skipped_outside=outside)
        gdf = _to_frame(gpd, tiles, probs, frac, labels, top_k, min_score, plan)
    finally:
        if own:
            scene.close()
    log.info(summary.describe())
    return Classification(gdf, [lab.name for lab in labels], plan, summary, float(min_score))


def _to_frame(gpd, tiles, probs, frac, labels, top_k, min_score, plan: TilePlan):
    names = np.array([lab.name for lab in labels], dtype=object)
    probs = probs.reshape(len(tiles), len(labels))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    top_p = np.take_along_axis(probs, order, axis=1).astype(np.float32)
    data = {
        "row": np.array([t.row for t in tiles], dtype=np.int32),
        "col": np.array([t.col for t in tiles], dtype=np.int32),
        "label": np.where(top_p[:, 0] >= min_score, names[order[:, 0]], UNKNOWN).astype(object),
        "score": top_p[:, 0],
    }
    for k in range(top_k):
        data[f"label_{k + 1}"] = names[order[:, k]]
        data[f"score_{k + 1}"] = top_p[:, k]
    data["valid_frac"] = frac.astype(np.float32)
    return gpd.GeoDataFrame(data, geometry=[plan.footprint(t) for t in tiles], crs=plan.crs)

