"""Per-tile object counting: RemoteCount's prompts ("a satellite photo of {n} {objects}", n = 1..max) per tile.

The prompt scoring is ``runtime.count_prompts.CountPredictor`` (the same code the
``eval count`` benchmark measures); this module runs it over a scene's tiles,
reusing the scene index's image embeddings when the tiling matches. Counts
start at 1, as in RemoteCount: a tile without the object still gets a count,
so read the probabilities (or pre-filter tiles with ``search``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .classify import RunSummary
from ..runtime.encoder import ClipModel, load_model
from ..errors import LabelError
from ..runtime.count_prompts import DEFAULT_TEMPLATE, CountPredictor, check_max_count
from ..embeddings.reuse import ProgressCallback, scale_embeddings
from ..raster.scene import Scene
from ..raster.tiling import TilePlan, TileSpec

log = logging.getLogger(__name__)

COLUMNS = ("row", "col", "count", "probability", "runner_up", "runner_up_probability", "valid_frac")


@dataclass
class Counts:
    """Counts of ``object`` per tile: ``frame`` (one row per counted tile, see ``count_objects``), their ``total``
    (sum of the tile counts), the largest count scored, the run summary and the tile plan."""

    frame: object = field(repr=False)  # geopandas.GeoDataFrame
    object: str
    total: int
    max_count: int
    summary: RunSummary
    plan: TilePlan = field(repr=False)
    reused_index: bool = False

    def __len__(self) -> int:
        return len(self.frame)

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The counted tiles as a vector file (.gpkg, .parquet, .geojson), atomically."""
        from ..outputs.writers import write_vector

        return write_vector(self.frame, path, overwrite=overwrite)


def count_objects(scene: str | os.PathLike | Scene, object_name: str, max_count: int = 10,
                  model: ClipModel | str | None = None, tile: TileSpec | None = None,
                  numerals: str | Sequence[str] = "words", template: str = DEFAULT_TEMPLATE,
                  max_invalid: float = 0.5, use_index: bool = True, index_path: str | os.PathLike | None = None,
                  progress: ProgressCallback | None = None, **scene_options) -> Counts:
    """Count ``object_name`` in each valid tile of ``scene``; returns Counts.

    Its ``frame`` (a GeoDataFrame in the scene CRS) has the columns row, col, count, probability, runner_up,
    runner_up_probability, valid_frac, geometry (tile footprint). A scene without CRS gives pixel coordinates
    (x = column, y = row), with a warning.
    """
    import geopandas as gpd

    if not isinstance(object_name, str) or not object_name.strip():
        raise LabelError("empty object name; say what to count, e.g. 'small vehicle'")
    max_count = check_max_count(max_count)  # before the model is loaded
    model = model if isinstance(model, ClipModel) else load_model(model)
    predictor = CountPredictor(model, object_name.strip(), max_count, numerals, template)
    tile = tile or TileSpec()
    own = not isinstance(scene, Scene)
    sc = Scene(scene, **scene_options) if own else scene
    start = time.perf_counter()
    try:
        (emb,) = scale_embeddings(sc, [tile], model, max_invalid, scene_options, use_index=use_index and own,
                                  index_path=index_path, progress=progress)
        scene_name = str(sc.path)
    finally:
        if own:
            sc.close()
    preds = predictor.predict(emb.embeddings) if len(emb.tiles) else []
    data = {
        "row": np.array([t.row for t in emb.tiles], np.int32),
        "col": np.array([t.col for t in emb.tiles], np.int32),
        "count": np.array([p.count for p in preds], np.int32),
        "probability": np.array([p.probability for p in preds], np.float32),
        "runner_up": np.array([p.runner_up for p in preds], np.int32),
        "runner_up_probability": np.array([p.runner_up_probability for p in preds], np.float32),
        "valid_frac": emb.valid_fraction.astype(np.float32),
    }
    gdf = gpd.GeoDataFrame(data, geometry=[emb.plan.footprint(t) for t in emb.tiles], crs=emb.plan.crs)
    total = int(data["count"].sum())
    summary = RunSummary(scene_name, len(emb.plan), len(emb.tiles), emb.skipped, time.perf_counter() - start,
                         model.provider, model.run_label, emb.plan.tile_width, emb.plan.tile_height,
                         extra={"object": object_name.strip(), "total": total, "reused_index": emb.reused},
                         skipped_outside=emb.plan.skip_reasons(((t.row, t.col) for t in emb.tiles), max_invalid)[0])
    if tile.overlap > 0:
        log.warning("tiles overlap by %g: objects in the overlaps are counted in several tiles, so the total "
                    "over-counts", tile.overlap)
    log.info("%s: %d tiles, %s total %d", scene_name, len(emb.tiles), object_name, total)
    return Counts(gdf, object_name.strip(), total, int(max_count), summary, emb.plan, bool(emb.reused))

