"""Text -> object polygons: threshold the dense score map, split touching objects, vectorise.

1. ``dense_map`` scores the scene (one dense-head pass per large window, see ``dense_map.py``). The cell
   embeddings do not depend on the query: they are saved beside the scene and reused by the next query on it
   (``embeddings/dense_cells.py``; ``use_index=False`` neither reads nor writes them).
2. Threshold: a number (score units: cosine similarity, minus the negatives' term); ``otsu`` = Otsu's
   threshold on the scene's finite scores (256-bin histogram between their min and max: the score that best
   separates the map into two classes, maximising the between-class variance); or ``auto`` = the bundle's
   calibrated threshold (model.json ``dense.threshold``, picked on held-out training cells by
   ``training.dense_align threshold``) for a templated query without negatives, Otsu otherwise. Otsu always finds
   a split, so on a scene without the object it still returns its best-scoring areas; a calibrated or given
   number can answer "nothing found".
3. Split: a connected region above the threshold that holds several peaks (cells that are the maximum of their
   3 x 3 neighbourhood on the cell grid, above the threshold) is divided by a marker-based watershed on the score
   map (marker-based flooding with ``scipy.ndimage``, ``flood_from_markers``), one region per peak: touching objects become one polygon each.
4. Vectorise (``rasterio.features.shapes``) on the output grid, simplify by half an output cell (neighbours
   keep their shared edges), and keep polygons
   of at least ``min_area_m2`` (default: half a dense cell). Each polygon has ``score`` (its maximum), ``score_mean``,
   ``area_m2`` (projected CRS: in the CRS's units; geographic: geodesic), ``peak_x``/``peak_y`` and ``source``.
5. Optional refinement (``refine``: a SAM/MobileSAM ONNX folder, see ``sam.py``): each polygon's peak and box
   prompt SAM on a crop of the scene at full resolution; its mask replaces the polygon (``source`` = 'sam').
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from pyproj import CRS, Geod

from .dense_map import DENSE_OVERLAP, DenseMap, dense_map
from ..embeddings.dense_cells import DenseCellCache
from ..runtime.encoder import ClipModel, load_model
from ..errors import OptionError, RasterInputError
from .heatmap import DEFAULT_MAX_CELLS
from ..raster.scene import Scene

log = logging.getLogger(__name__)

COLUMNS = ("id", "score", "score_mean", "area_m2", "peak_x", "peak_y", "source", "sam_iou")
OTSU_BINS = 256
FLOOD_LEVELS = 32  # score levels of the marker-based watershed
FLOOD_SAMPLES_PER_CELL = 4  # the watershed floods this many samples per dense cell side (flood_sampled)


@dataclass
class Segmentation:
    """Polygons of a query (a GeoDataFrame, possibly empty), the dense map they came from, the threshold used."""

    polygons: object  # geopandas.GeoDataFrame
    dense: DenseMap
    threshold: float
    threshold_rule: str
    stats: dict = field(default_factory=dict)

    @property
    def message(self) -> str:
        n = len(self.polygons)
        if n == 0:
            return (f"no object found for {self.dense.query!r}: no area scores above the threshold "
                    f"{self.threshold:.4g} ({self.threshold_rule}) with at least the minimum area")
        return f"{n} object(s) for {self.dense.query!r} above {self.threshold:.4g} ({self.threshold_rule})"

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        from ..outputs.writers import write_vector

        return write_vector(self.polygons, path, overwrite=overwrite)


# ---- threshold --------------------------------------------------------------------------------------------------
def otsu_threshold(values: np.ndarray, bins: int = OTSU_BINS) -> float:
    """Otsu's threshold of the finite ``values`` (the upper edge of the best lower class); NaN when none."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    lo, hi = float(v.min()), float(v.max())
    if hi - lo <= 1e-12:
        return hi
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1])


def parse_threshold(threshold: str | float) -> str | float:
    """'auto', 'otsu' or a finite number; checked before any window is encoded."""
    if isinstance(threshold, str):
        rule = threshold.strip().lower()
        if rule in ("auto", "otsu"):
            return rule
        try:
            threshold = float(threshold)
        except ValueError:
            raise OptionError(f"threshold must be 'auto', 'otsu' or a number, got {threshold!r}") from None
    if isinstance(threshold, bool) or not math.isfinite(float(threshold)):
        raise OptionError(f"threshold must be a finite number, got {threshold!r}")
    return float(threshold)


def resolve_threshold(threshold: str | float, scores: np.ndarray, calibrated: float | None = None
                      ) -> tuple[float, str]:
    """(value, rule): a number as given; 'otsu': Otsu on the scene's scores; 'auto': the model's ``calibrated``
    threshold when there is one (it holds for templated queries without negatives), else Otsu."""
    rule = parse_threshold(threshold)
    if rule == "auto" and calibrated is not None:
        return float(calibrated), "auto: the model's calibrated threshold (model.json dense.threshold)"
    if isinstance(rule, str):
        return otsu_threshold(scores), f"{rule}: Otsu on the scene's scores"
    return rule, "given"


# ---- peaks and splitting ----------------------------------------------------------------------------------------
def cell_peaks(cells: np.ndarray, threshold: float) -> np.ndarray:
    """(row, col) float centres of the local maxima of the cell map above ``threshold`` (plateaus: one each)."""
    from scipy import ndimage

    filled = np.where(np.isfinite(cells), cells, -np.inf)
    is_max = (filled == ndimage.maximum_filter(filled, size=3, mode="constant", cval=-np.inf)) & (filled >= threshold)
    labels, n = ndimage.label(is_max, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(is_max, labels, range(1, n + 1)), np.float64).reshape(-1, 2)


def flood_from_markers(score: np.ndarray, region: np.ndarray, seeds: np.ndarray, levels: int = FLOOD_LEVELS
                       ) -> np.ndarray:
    """Marker-based watershed by flooding: labels grow from ``seeds`` (int, 0 = none) over ``region``, level by
    level from the highest score down (``levels`` quantiles of the region's scores). At each level, the
    unlabelled pixels at or above it that are connected (at that level) to a labelled pixel take the label of the
    nearest labelled pixel (Euclidean distance transform), so where two fronts meet the boundary follows the
    score's valleys to within one level. (scipy.ndimage.watershed_ift left most pixels unlabelled on such maps with
    scipy 1.10; per-pixel dilation was ~1,000x slower.)"""
    from scipy import ndimage

    labels = np.where(region, seeds, 0).astype(np.int32)
    values = score[region]
    thresholds = np.unique(np.quantile(values, np.linspace(1, 0, levels + 1)))[::-1]
    for level in thresholds:
        allowed = region & (score >= level)
        free = allowed & (labels == 0)
        if not free.any():
            continue
        comp, n = ndimage.label(allowed)
        seeded = np.zeros(n + 1, bool)
        seeded[np.unique(comp[labels > 0])] = True
        seeded[0] = False
        take = free & seeded[comp]
        if take.any():
            _, (ri, ci) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
            labels[take] = labels[ri[take], ci[take]]
    return labels


def flood_sampled(score: np.ndarray, region: np.ndarray, peaks: Sequence[tuple[int, int]], step: int) -> np.ndarray:
    """``flood_from_markers`` on every ``step``-th pixel of the region's box, its labels spread back to every region
    pixel (each takes its sample's label, or the nearest labelled pixel's where its sample fell outside the region).

    Why: the dense map is bilinear between cell centres, so a few samples per cell carry its shape; flooding every
    output pixel cost a distance transform of the whole box per level (2.8 s of a 3.3 s ``segment`` on a 1200^2
    scene). Outer outlines do not move; boundaries between touching objects can differ from the every-pixel
    flood's by up to about a cell, which is how uncertain that flood's 32 levels leave them: both agree with a
    128-level every-pixel flood about equally (tests/test_segment.py)."""
    from scipy import ndimage

    o = step // 2
    s_score = score[o::step, o::step].copy()
    s_region = region[o::step, o::step].copy()
    seeds = np.zeros(s_region.shape, np.int32)
    for i, (r, c) in enumerate(peaks, start=1):
        rr, cc = min(r // step, seeds.shape[0] - 1), min(c // step, seeds.shape[1] - 1)
        seeds[rr, cc], s_region[rr, cc], s_score[rr, cc] = i, True, score[r, c]  # a peak always has its sample
    coarse = flood_from_markers(s_score, s_region, seeds)
    up = coarse.repeat(step, axis=0).repeat(step, axis=1)
    pad = (max(0, region.shape[0] - up.shape[0]), max(0, region.shape[1] - up.shape[1]))
    up = np.pad(up, ((0, pad[0]), (0, pad[1])), mode="edge")[:region.shape[0], :region.shape[1]]
    labels = np.where(region, up, 0).astype(np.int32)
    missing = region & (labels == 0)
    if missing.any() and (labels > 0).any():
        _, (ri, ci) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        labels[missing] = labels[ri[missing], ci[missing]]
    return labels


def split_regions(score: np.ndarray, mask: np.ndarray, markers: np.ndarray, step: int = 1) -> np.ndarray:
    """Label image of ``mask``: each connected region, divided by a watershed where it holds several markers.

    ``markers``: [n, 2] integer (row, col) pixel positions of the peaks on the score grid. ``step`` > 1 floods
    every ``step``-th pixel (``flood_sampled``) of regions larger than a few steps.
    """
    from scipy import ndimage

    regions, n = ndimage.label(mask)
    out = np.zeros(mask.shape, np.int32)
    if n == 0:
        return out
    per_region: dict[int, set[tuple[int, int]]] = {}
    for r, c in markers:
        r, c = int(r), int(c)
        if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]:
            per_region.setdefault(int(regions[r, c]), set()).add((r, c))
    next_label = 1
    for k, sl in enumerate(ndimage.find_objects(regions), start=1):
        region = regions[sl] == k
        peaks = sorted(per_region.get(k, ()))
        view = out[sl]
        if len(peaks) < 2:
            view[region] = next_label
            next_label += 1
            continue
        local = [(r - sl[0].start, c - sl[1].start) for r, c in peaks]
        masked = np.where(region, score[sl], -np.inf)
        if step > 1 and min(region.shape) >= 4 * step:
            flooded = flood_sampled(masked, region, local, step)
        else:
            seeds = np.zeros(region.shape, np.int32)
            for i, (r, c) in enumerate(local, start=1):
                seeds[r, c] = i
            flooded = flood_from_markers(masked, region, seeds)
        flooded[region & (flooded == 0)] = 0
        for i in range(1, len(peaks) + 1):
            part = flooded == i
            if part.any():
                view[part] = next_label
                next_label += 1
        rest = region & (flooded == 0)  # pixels no front reached (none for a connected region)
        if rest.any():
            view[rest] = next_label
            next_label += 1
    return out


# ---- vectorising --------------------------------------------------------------------------------------------------
def area_m2_of(geoms, crs) -> np.ndarray:
    """Polygon areas in square metres: projected CRS by its linear unit, geographic CRS geodesically."""
    if crs is None:
        return np.full(len(geoms), np.nan)
    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        geod = crs.get_geod() or Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms])
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return np.array([g.area for g in geoms]) * factor ** 2


def vectorise(labels: np.ndarray, transform, simplify: float) -> dict[int, object]:
    """label -> (Multi)Polygon in the CRS of ``transform``, simplified by ``simplify`` CRS units."""
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    parts: dict[int, list] = {}
    for geom, value in shapes(labels, mask=labels > 0, transform=transform, connectivity=4):
        parts.setdefault(int(value), []).append(shape(geom))
    keys = sorted(parts)
    geoms = [parts[k][0] if len(parts[k]) == 1 else unary_union(parts[k]) for k in keys]
    if simplify > 0 and geoms:
        import shapely

        if hasattr(shapely, "coverage_simplify"):  # shapely >= 2.1: neighbours keep their shared edges
            geoms = list(shapely.coverage_simplify(geoms, simplify, simplify_boundary=True))
        else:
            geoms = [g.simplify(simplify, preserve_topology=True) for g in geoms]
    return dict(zip(keys, geoms))


def empty_polygons(crs):
    import geopandas as gpd

    return gpd.GeoDataFrame({"id": np.zeros(0, np.int64), "score": np.zeros(0), "score_mean": np.zeros(0),
                             "area_m2": np.zeros(0), "peak_x": np.zeros(0), "peak_y": np.zeros(0),
                             "source": np.zeros(0, dtype=object), "sam_iou": np.zeros(0)},
                            geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def blobs(dmap: DenseMap, threshold: float, split: bool = True) -> tuple[np.ndarray, list[dict]]:
    """(label image on the output grid, per-label dicts: label, score, score_mean, peak (row, col) on the grid)."""
    from scipy import ndimage

    score = dmap.array
    finite = np.isfinite(score)
    mask = finite & (np.where(finite, score, -np.inf) >= threshold)
    g = dmap.grid
    markers = np.zeros((0, 2), np.int64)
    if split:
        peaks = cell_peaks(dmap.cells, threshold)  # cell coordinates -> output grid rows/cols
        markers = np.stack([np.floor((peaks[:, 0] + 0.5) * dmap.cell_px / g.cell_y),
                            np.floor((peaks[:, 1] + 0.5) * dmap.cell_px / g.cell_x)], axis=1).astype(np.int64)
    step = max(1, int(dmap.cell_px / max(g.cell_x, g.cell_y)) // FLOOD_SAMPLES_PER_CELL)
    labels = split_regions(score, mask, markers, step) if split else ndimage.label(mask)[0].astype(np.int32)
    n = int(labels.max())
    if n == 0:
        return labels, []
    index = np.arange(1, n + 1)
    filled = np.where(finite, score, -np.inf)
    maxima = ndimage.maximum(filled, labels, index)
    means = ndimage.mean(np.where(finite, score, 0.0), labels, index)
    where = ndimage.maximum_position(filled, labels, index)
    return labels, [{"label": int(k), "score": float(mx), "score_mean": float(mn), "peak": (int(p[0]), int(p[1]))}
                    for k, mx, mn, p in zip(index, maxima, means, where)]


def polygons_from(dmap: DenseMap, labels: np.ndarray, info: list[dict], min_area_m2: float | None):
    """GeoDataFrame of the labelled regions (sorted by score), regions below ``min_area_m2`` left out."""
    import geopandas as gpd

    if not info:
        return empty_polygons(dmap.crs)
    t = dmap.transform
    simplify = 0.5 * min(math.hypot(t.a, t.d), math.hypot(t.b, t.e))
    geoms = vectorise(labels, t, simplify)
    rows = []
    for b in info:
        g = geoms.get(b["label"])
        if g is None or g.is_empty:
            continue
        x, y = t @ (b["peak"][1] + 0.5, b["peak"][0] + 0.5)
        rows.append({"score": b["score"], "score_mean": b["score_mean"], "peak_x": x, "peak_y": y,
                     "source": b.get("source", "dense"), "sam_iou": b.get("sam_iou", float("nan")),
                     "geometry": b.get("geometry", g)})
    if not rows:
        return empty_polygons(dmap.crs)
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=dmap.crs)
    gdf["area_m2"] = area_m2_of(list(gdf.geometry), dmap.crs)
    if min_area_m2 is not None and min_area_m2 > 0:
        gdf = gdf[~(gdf["area_m2"] < min_area_m2)]
    gdf = gdf.sort_values("score", ascending=False).reset_index(drop=True)
    gdf.insert(0, "id", np.arange(1, len(gdf) + 1))
    return gdf[list(COLUMNS) + ["geometry"]] if len(gdf) else empty_polygons(dmap.crs)


def default_min_area_m2(dmap: DenseMap) -> float | None:
    """Half a dense cell, in square metres (None without a CRS)."""
    if dmap.crs is None:
        return None
    from shapely.geometry import box

    t = dmap.cell_transform
    cell = box(*[v for v in (t.c, t.f + t.e, t.c + t.a, t.f)]) if t.b == 0 and t.d == 0 else None
    if cell is None:
        return None
    return 0.5 * float(area_m2_of([cell], dmap.crs)[0])


def _dense_cache(sc: Scene, model: ClipModel, scene_options: dict) -> DenseCellCache | None:
    try:
        return DenseCellCache(sc.path, model.bundle.name, model.fingerprint, scene_options)
    except OSError as exc:  # not a local file (e.g. a /vsicurl/ URL): nothing to key the cells on
        log.info("dense cells of %s are not kept (%s)", sc.path, exc)
        return None


# ---- the API --------------------------------------------------------------------------------------------------
def segment(scene: str | os.PathLike | Scene, query: str, model: ClipModel | str | None = None,
            threshold: str | float = "auto", min_area_m2: float | None = None,
            negative: str | Sequence[str] | None = None, negative_weight: float = 0.5, raw: bool = False,
            scale: float = 1.0, window: int | None = None, overlap: float = DENSE_OVERLAP, split: bool = True,
            refine: str | os.PathLike | None = None, max_invalid: float = 0.5, max_cells: int = DEFAULT_MAX_CELLS,
            progress=None, staggered: bool = True, use_index: bool = True, **scene_options) -> Segmentation:
    """Polygons of the objects ``query`` names in ``scene`` (see the module docstring).

    ``scale``: scene pixels per model pixel (1 = native resolution; 2 halves it). ``window``: dense window side in
    model pixels (default: the bundle's). ``overlap``, ``staggered``: the window layout (tasks/dense_map.py).
    ``refine``: a SAM/MobileSAM ONNX folder (``sam.py``). ``use_index``: reuse / save the scene's dense cells
    (only for a scene given as a path: an opened Scene's options are not known here).
    Returns a Segmentation; no object above the threshold gives an empty GeoDataFrame and a message, not an error.
    """
    start = time.perf_counter()
    model = model if isinstance(model, ClipModel) else load_model(model)
    negatives = [negative] if isinstance(negative, str) else list(negative or [])
    if min_area_m2 is not None and not 0 <= min_area_m2 < math.inf:
        raise OptionError(f"min_area_m2 must be a number >= 0, got {min_area_m2}")
    parse_threshold(threshold)
    refiner = None
    if refine is not None:
        from .sam import SamRefiner

        refiner = SamRefiner(refine, threads=None)
    own = not isinstance(scene, Scene)
    sc = Scene(scene, **scene_options) if own else scene
    try:
        if min_area_m2 and sc.crs is None:
            raise RasterInputError(f"{sc.path}: no CRS, so a minimum area in m2 cannot be applied")
        cache = _dense_cache(sc, model, scene_options) if own and use_index else None
        dmap = dense_map(sc, model, query, negatives, negative_weight, raw, scale, window, overlap, max_invalid,
                         max_cells, progress, staggered, cache)
        calibrated = model.bundle.dense.threshold if not (negatives or raw) else None
        value, rule = resolve_threshold(threshold, dmap.array, calibrated)
        labels, info = blobs(dmap, value, split)
        if refiner is not None and info:
            info = refiner.refine(sc, dmap, labels, info)
    finally:
        if own:
            sc.close()
    min_area = default_min_area_m2(dmap) if min_area_m2 is None else float(min_area_m2)
    gdf = polygons_from(dmap, labels, info, min_area)
    stats = {**dmap.stats, "threshold": value, "regions": len(info), "polygons": len(gdf),
             "min_area_m2": min_area, "refined": sum(1 for b in info if b.get("source") == "sam"),
             "seconds": time.perf_counter() - start}
    result = Segmentation(gdf, dmap, value, rule, stats)
    log.info("%s", result.message)
    return result
