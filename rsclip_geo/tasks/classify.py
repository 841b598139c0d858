"""Zero-shot tile labelling: every valid tile of a scene gets the label whose prompts it matches best."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..runtime.encoder import ClipModel, load_model
from ..runtime.prompts import Label, parse_labels
from ..raster.scene import Scene
from ..embeddings.encode import ProgressCallback, encode_scene
from ..raster.tiling import TilePlan, TileSpec, plan_tiles

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class SingleLabelWarning(UserWarning):
    """tile_classify with one label: the softmax over one class is 1.0 everywhere (meaningless)."""


@dataclass
class RunSummary:
    """What a run did, for the end-of-run report (also stored in ``GeoDataFrame.attrs``)."""

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


def tile_classify(scene: str | Path | Scene, labels: str | Sequence[str | Label], model: ClipModel | str | None = None,
                  tile: TileSpec | None = None, bands: Sequence[int] | None = None, top_k: int = 3,
                  min_score: float = 0.0, max_invalid: float = 0.5, templates: Sequence[str] | None = None,
                  progress: ProgressCallback | None = None, **scene_options):
    """Label each tile of ``scene`` with one of ``labels``; returns a GeoDataFrame in the scene CRS.

    Columns: row, col, label (or 'unknown' below ``min_score``), score, label_1..k / score_1..k
    (top-k), valid_frac, geometry (tile footprint). ``attrs['summary']`` holds a RunSummary.
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
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    top_k = max(1, min(int(top_k), len(labels)))
    model = model if isinstance(model, ClipModel) else load_model(model)
    class_emb = model.class_embeddings(labels, templates)  # before reading: label errors come first
    own = not isinstance(scene, Scene)
    scene = Scene(scene, bands=bands, **scene_options) if own else scene
    try:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, tile or TileSpec(),
                          model.bundle.image.size, source=str(scene.path))
        start = time.perf_counter()
        encoded = encode_scene(scene, plan, model, max_invalid, progress)
        tiles, emb, frac = encoded.tiles, encoded.embeddings, encoded.valid_fraction
        probs = model.probabilities(emb, class_emb)
        outside, _ = plan.skip_reasons(((t.row, t.col) for t in tiles), max_invalid)
        summary = RunSummary(str(scene.path), len(plan), len(tiles), encoded.stats.skipped, time.perf_counter() - start,
                             model.provider, model.bundle.name, plan.tile_width, plan.tile_height,
                             skipped_outside=outside)
        gdf = _to_frame(gpd, tiles, probs, frac, labels, top_k, min_score, plan)
    finally:
        if own:
            scene.close()
    gdf.attrs["summary"] = summary
    gdf.attrs["labels"] = [lab.name for lab in labels]
    gdf.attrs["plan"] = plan
    log.info(summary.describe())
    return gdf


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


def class_grid(gdf, labels: Sequence[str], plan: TilePlan, nodata: int = 255) -> np.ndarray:
    """One pixel per tile: index of the tile's label (``unknown`` and skipped tiles are nodata)."""
    grid = np.full((plan.n_rows, plan.n_cols), nodata, dtype=np.uint8)
    index = {name: i for i, name in enumerate(labels)}
    for row, col, label in zip(gdf["row"], gdf["col"], gdf["label"]):
        if label in index:
            grid[row, col] = index[label]
    return grid
