"""Text search over indexed scenes: one text encoding plus a matrix product per query."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..runtime.encoder import ClipModel, load_model, split_rotations
from ..errors import IndexFileError, LabelError, OptionError, RasterInputError
from ..embeddings.index import META_KEY, SceneIndex, load_or_build_index, read_index, read_index_meta
from ..embeddings.key import stale_reason
from ..outputs.geoparquet import has_metadata_key
from ..raster.tiling import TileSpec

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")
INDEX_SUFFIXES = (".parquet", ".geoparquet")


def _is_index(path: Path) -> bool:
    return path.suffix.lower() in INDEX_SUFFIXES


def _has_index_key(path: Path) -> bool:
    """Whether a Parquet file in a searched folder is an index (has our metadata key); unreadable files count
    as indexes, so that a damaged index is reported, not silently left out."""
    return has_metadata_key(path, META_KEY, unreadable=True)


def _check_model(meta: dict, where, model: ClipModel) -> None:
    """Embeddings of other weights live in another space: scoring them against this model's text is noise."""
    reason = stale_reason(meta, model_fingerprint=model.fingerprint)
    stored = split_rotations((meta.get("model") or {}).get("fingerprint"))[0]
    if reason and stored == model.weights_fingerprint:  # same weights, another rotation ensemble
        raise IndexFileError(f"{where}: {reason}; search it with the --rotations it was built with (load_model("
                             "rotations=...)) or rebuild the index")
    if reason:
        raise IndexFileError(f"{where}: {reason}; the loaded model is {model.bundle.name!r}: search it with that "
                             "model or rebuild the index")


def _open_index(path: Path, model: ClipModel) -> SceneIndex:
    _check_model(read_index_meta(path), path, model)
    return read_index(path)


def collect_indexes(source, model: ClipModel, scales: Sequence[TileSpec] | None = None, max_invalid: float = 0.5,
                    rebuild: bool = False, progress=None, **scene_options) -> list[SceneIndex]:
    """Indexes for a scene, an index file, a folder (of indexes, else of scenes), or a list of those."""
    if isinstance(source, SceneIndex):
        _check_model(source.meta, f"index of {source.scene}", model)
        return [source]
    if isinstance(source, (list, tuple)):
        out: list[SceneIndex] = []
        for item in source:
            out += collect_indexes(item, model, scales, max_invalid, rebuild, progress, **scene_options)
        return out
    path = Path(source)
    if path.is_dir():
        # dot-files are temporary outputs still being written (writers.atomic_path)
        parquets = sorted(p for p in path.rglob("*") if p.is_file() and _is_index(p) and not p.name.startswith("."))
        indexes = [p for p in parquets if _has_index_key(p)]
        if len(indexes) < len(parquets):  # e.g. hits or classifications saved in the same folder
            log.info("%s: skipping %d Parquet file(s) that are not rsclip-geo indexes: %s", path,
                     len(parquets) - len(indexes), ", ".join(p.name for p in parquets if p not in indexes))
        if indexes:
            return [_open_index(p, model) for p in indexes]
        scenes = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        if not scenes:
            raise RasterInputError(
                f"{path}: folder holds neither rsclip-geo indexes nor rasters"
                + (f" ({len(parquets)} Parquet file(s), none an index: {', '.join(p.name for p in parquets[:5])})"
                   if parquets else ""))
        return collect_indexes(scenes, model, scales, max_invalid, rebuild, progress, **scene_options)
    if not path.exists():
        raise RasterInputError(f"{path}: file does not exist")
    if _is_index(path):
        return [_open_index(path, model)]
    return [load_or_build_index(path, model, scales, max_invalid, rebuild=rebuild, progress=progress,
                                **scene_options)]


def query_embedding(model: ClipModel, query: str, raw: bool = False, what: str = "search query") -> np.ndarray:
    """The query through the bundle's prompt templates (an ensemble), or as given with ``raw``."""
    if not isinstance(query, str) or not query.strip():
        raise LabelError(f"empty {what} {query!r}; give the text to find, e.g. 'storage tanks'")
    return model.encode_text([query.strip()])[0] if raw else model.class_embeddings([query.strip()])[0]


def score_tiles(embeddings: np.ndarray, query: np.ndarray, negatives: np.ndarray | None = None,
                negative_weight: float = 0.5, similarity: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity to the query, minus ``negative_weight`` x the similarity to each negative.

    ``similarity`` (``embeddings @ query``, when the caller has it) saves the one pass over the embeddings
    that dominates a query on a large index.
    """
    score = embeddings @ query if similarity is None else similarity
    if negatives is not None and len(negatives):
        score = score - negative_weight * (embeddings @ negatives.T).sum(axis=1)
    return score


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    if k == 0:
        return np.zeros(0, dtype=int)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


@dataclass
class SearchHits:
    """The best tiles for a query: ``frame`` (ranked hits, see ``search``), plus every tile's score per index.

    ``scores[i]`` holds one score per row of ``indexes[i].frame`` (in that order): the material of
    similarity rasters and of cuts relative to the whole scene.
    """

    frame: object = field(repr=False)  # geopandas.GeoDataFrame
    query: str
    indexes: list[SceneIndex] = field(repr=False)
    scores: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def n_tiles(self) -> int:
        """Tiles searched, over every index."""
        return sum(len(ix) for ix in self.indexes)

    def similarity_grid(self, index: int = 0, scale: int = 0, tile_grid: bool = False) -> tuple[np.ndarray, object]:
        """Index ``index``'s scores of one scale as (array, transform); see the module function ``similarity_grid``."""
        return similarity_grid(self.indexes[index], self.scores[index], scale, tile_grid)

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """The hits as a vector file (.gpkg, .parquet, .geojson), atomically."""
        from ..outputs.writers import write_vector

        return write_vector(self.frame, path, overwrite=overwrite)

    def write_scores(self, path: str | os.PathLike, overwrite: bool = False, index: int = 0, scale: int = 0) -> Path:
        """Index ``index``'s tile scores of one scale as a float32 raster (COG, NaN nodata) on the scene's grid."""
        from ..outputs.writers import write_float_raster

        grid, transform = self.similarity_grid(index, scale)
        return write_float_raster(path, grid, transform, self.indexes[index].frame.crs, overwrite=overwrite,
                                  description=f"score: {self.query}")


def search(source, query: str, top: int = 20, negative: str | Iterable[str] | None = None,
           model: ClipModel | str | None = None, scales: Sequence[TileSpec] | None = None,
           negative_weight: float = 0.5, raw: bool = False, max_invalid: float = 0.5, rebuild: bool = False,
           progress=None, **scene_options) -> SearchHits:
    """Top-``top`` tiles for ``query``: SearchHits whose ``frame`` is a GeoDataFrame (rank, score, similarity,
    scene, tile_px, row, col, valid_frac, geometry).

    ``source``: a scene (indexed on first use, the index reused while fresh), an index file, a folder,
    a list of those, or a SceneIndex. Several scenes in different CRS are returned in EPSG:4326.
    ``scores`` holds every tile's score per index (aligned with ``indexes``), for similarity rasters.
    """
    import geopandas as gpd
    import pandas as pd

    model = model if isinstance(model, ClipModel) else load_model(model)
    if top < 1:
        raise OptionError(f"top must be >= 1, got {top}")
    if isinstance(negative_weight, bool) or not 0 <= float(negative_weight) < math.inf:
        raise OptionError(f"negative_weight must be a finite number >= 0, got {negative_weight!r}")
    q = query_embedding(model, query, raw)
    negatives = [negative] if isinstance(negative, str) else list(negative or [])
    neg = np.stack([query_embedding(model, n, raw, 'negative prompt') for n in negatives]) if negatives else None
    indexes = collect_indexes(source, model, scales, max_invalid, rebuild, progress, **scene_options)
    if not indexes:
        raise OptionError(f"nothing to search in {source!r}: give a scene, an index file, a folder, a SceneIndex or "
                          "a non-empty list of those")
    sims = [ix.embeddings @ q for ix in indexes]
    per_index = [score_tiles(ix.embeddings, q, neg, negative_weight, sim) for ix, sim in zip(indexes, sims)]
    crs_set = {ix.frame.crs.to_wkt() if ix.frame.crs else None for ix in indexes}
    target_crs = indexes[0].frame.crs if len(crs_set) == 1 else "EPSG:4326"
    if len(crs_set) > 1:
        log.warning("scenes are in %d different CRS; hits are returned in EPSG:4326", len(crs_set))
    frames = []
    for ix, scores, sim in zip(indexes, per_index, sims):
        best = top_indices(scores, top)
        part = ix.frame.iloc[best].copy()
        part["score"] = scores[best].astype(np.float32)
        part["similarity"] = sim[best].astype(np.float32)
        frames.append(_lonlat(part) if len(crs_set) > 1 else part)
    hits = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=target_crs)
    hits = hits.sort_values("score", ascending=False, kind="stable").head(top).reset_index(drop=True)
    hits.insert(0, "rank", np.arange(1, len(hits) + 1, dtype=np.int32))
    hits = hits[["rank", "score", "similarity", "scene", "tile_px", "row", "col", "valid_frac", "geometry"]]
    return SearchHits(hits, query, indexes, per_index)


def _lonlat(frame):
    """``frame`` in EPSG:4326, tiles that cross the antimeridian split there into a MultiPolygon (180 | -180):
    reprojected as they are, their corners at +179.9 and -179.9 make a polygon 360 degrees wide."""
    out = frame.to_crs("EPSG:4326")
    out["geometry"] = [split_antimeridian(g) for g in out.geometry]
    return out


def split_antimeridian(geom):
    """A lon/lat polygon whose longitudes span more than 180 degrees, read as crossing the antimeridian."""
    import shapely
    from shapely.affinity import translate
    from shapely.geometry import MultiPolygon, box

    if geom is None or geom.is_empty:
        return geom
    minx, _, maxx, _ = geom.bounds
    if maxx - minx <= 180:
        return geom
    shifted = shapely.transform(geom, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]),
                                                                     xy[:, 1]]))
    east = shifted.intersection(box(-180, -90, 180, 90))
    west = translate(shifted.intersection(box(180, -90, 540, 90)), xoff=-360)
    parts = [p for g in (east, west) for p in getattr(g, "geoms", [g]) if p.geom_type == "Polygon" and not p.is_empty]
    return MultiPolygon(parts)


def similarity_grid(index: SceneIndex, scores: np.ndarray, scale: int = 0, tile_grid: bool = False
                    ) -> tuple[np.ndarray, object]:
    """Per-tile scores of one scale (NaN where no tile) as (array, transform) on the scene's own grid
    (tile_grid.on_scene_grid: the scene's bounds, each cell the score of the tile owning it), or with
    ``tile_grid`` one cell per tile (row, col) on the plan's stride grid (which may hang past the scene)."""
    from ..raster.tile_grid import on_scene_grid

    plan = index.plans[scale]
    grid = np.full((plan.n_rows, plan.n_cols), np.nan, dtype=np.float32)
    sel = (index.frame["scale"].to_numpy() == scale)
    grid[index.frame["row"].to_numpy()[sel], index.frame["col"].to_numpy()[sel]] = scores[sel]
    return (grid, plan.grid_transform) if tile_grid else on_scene_grid(plan, grid, np.nan)

