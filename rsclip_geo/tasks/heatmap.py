"""Semantic localization (SeLo) heatmaps: where in a scene a text query matches, as a raster.

The method of GeoRSCLIP/RS5M's SeLo task, on the scene's own grid:

1. Multi-scale sliding windows. Each scale is a TileSpec with ``overlap=0.5``
   (stride = window / 2 in both axes, so every scale is also sampled at a
   half-window offset) and ``edge='shift'`` (the last row/column of windows is
   moved back inside the scene: every window is full size and full of scene
   pixels, so no padding is ever encoded and the whole scene is covered).
2. Each valid window's cosine similarity to the query (the bundle's prompt
   ensemble) is added to every output cell whose centre lies in the window
   (sum and count), over all scales, and the sum is divided by the count.
3. Min-max normalisation over the valid cells: ``(s - min) / (max - min)``,
   so the map is in [0, 1] per query (0 = least similar valid cell). A
   constant map becomes all 0. The raw mean similarity is kept in
   ``Heatmap.similarity`` and its min/max are written as raster tags.
4. Gaussian smoothing, sigma in output cells (default: a quarter of the smallest
   window stride, ``auto_sigma``), ignoring no-data cells
   (normalised convolution: the smoothed value is a weighted mean of valid
   normalised values, so it stays in [0, 1]).

Output grid: the scene's CRS and exact bounds, with ``n = ceil(extent / cell)``
cells per axis (cells are ``width / n`` scene pixels wide, so the bounds are
kept exactly). Default: the scene's own resolution when it has at most
``max_cells`` pixels, else a coarser cell so that the grid has about
``max_cells`` cells -- the accumulators live on the output grid, never on a
full-resolution array of a huge scene. Cells are NaN where the scene is invalid
(its validity read at output resolution) or no valid window covers them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling

from ..runtime.encoder import ClipModel, load_model
from ..errors import OptionError, RasterInputError
from ..embeddings.reuse import ScaleEmbeddings, scale_embeddings
from ..raster.scene import Scene
from ..raster.tiling import TileSpec, pixel_size_m
from ..outputs.writers import write_float_raster
from .search import query_embedding

log = logging.getLogger(__name__)

DEFAULT_MAX_CELLS = 4_000_000  # default output grid: ~2000 x 2000 cells at most
HARD_MAX_CELLS = 50_000_000  # an explicit resolution beyond this is refused (memory)
SELO_OVERLAP = 0.5
SELO_EDGE = "shift"
TRUNCATE = 4.0  # Gaussian kernel radius in sigmas
DIRECT_TAPS = 15  # longer Gaussian kernels are applied by FFT (faster from ~10 taps on large grids)
AUTO_SIGMA_STRIDES = 0.25  # default smoothing: sigma = this x the smallest window stride

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class OutputGrid:
    """The heatmap raster grid: same bounds as the scene, ``cell_x`` x ``cell_y`` scene pixels per cell."""

    n_rows: int
    n_cols: int
    cell_x: float
    cell_y: float
    transform: Affine
    crs: CRS | None


@dataclass
class Heatmap:
    """A query's heatmap on the output grid: ``array`` in [0, 1], NaN where there is no data."""

    array: np.ndarray  # float32 [rows, cols]
    transform: Affine
    crs: CRS | None
    query: str
    similarity: np.ndarray  # float32 mean cosine similarity per cell, before normalisation
    scales: list[TileSpec]
    window_px: list[tuple[int, int]]  # (width, height) of each scale's windows in scene pixels
    cell: tuple[float, float]  # scene pixels per output cell (x, y)
    sigma: float  # smoothing in output cells
    scene: str = ""
    stats: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the CRS (exact for north-up grids)."""
        rows, cols = self.array.shape
        xs, ys = zip(*(self.transform @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))))
        return min(xs), min(ys), max(xs), max(ys)

    def tags(self) -> dict:
        return {"QUERY": self.query, "METHOD": "SeLo multi-scale sliding windows, mean, min-max, gaussian",
                "WINDOWS_PX": ",".join(f"{w}x{h}" for w, h in self.window_px),
                "OVERLAP": str(self.scales[0].overlap if self.scales else ""), "SIGMA_CELLS": f"{self.sigma:g}",
                "SIMILARITY_MIN": f"{self.stats.get('similarity_min', float('nan')):.6g}",
                "SIMILARITY_MAX": f"{self.stats.get('similarity_max', float('nan')):.6g}",
                "NORMALISATION": "(similarity - SIMILARITY_MIN) / (SIMILARITY_MAX - SIMILARITY_MIN), then smoothed"}

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        return write_heatmap(self, path, overwrite)


def write_heatmap(heatmap: Heatmap, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Float32 COG on the heatmap grid (NaN nodata), query and normalisation as tags."""
    return write_float_raster(path, heatmap.array, heatmap.transform, heatmap.crs, overwrite=overwrite,
                              description=f"SeLo heatmap: {heatmap.query}", tags=heatmap.tags())


# ---- scales ---------------------------------------------------------------------------------------------------
def selo_specs(scales: Sequence[int | float | TileSpec] | None = None, scales_m: Sequence[float] | None = None,
               overlap: float = SELO_OVERLAP) -> list[TileSpec] | None:
    """Window sizes (pixels, metres or TileSpecs) as SeLo TileSpecs: ``overlap`` and edge 'shift'.

    None when neither is given (the default is chosen per scene, see ``default_scales``).
    """
    if scales and scales_m:
        raise OptionError("give window scales in pixels or in metres, not both")
    if not 0 < overlap < 1:
        raise OptionError(f"overlap must be in (0, 1), got {overlap}")
    if scales_m:
        return [TileSpec(size_m=float(v), overlap=overlap, edge=SELO_EDGE) for v in scales_m]
    if scales:
        out = []
        for s in scales:
            if isinstance(s, TileSpec):
                out.append(replace(s, overlap=overlap, edge=SELO_EDGE))
            else:
                if not 1 <= float(s) < math.inf or float(s) != int(s):
                    raise OptionError(f"window sizes in pixels must be whole numbers >= 1, got {s!r}")
                out.append(TileSpec(size_px=int(s), overlap=overlap, edge=SELO_EDGE))
        if len(set(out)) != len(out):
            raise OptionError(f"repeated window scale in {list(scales)}")
        return out
    return None


def default_scales(width: int, height: int, model_size: int, overlap: float = SELO_OVERLAP) -> list[TileSpec]:
    """The model's input size and twice it, where they fit half the scene's short side; else 1/4 and 1/2 of it.

    At most half the short side keeps at least three half-offset window positions per axis.
    """
    short = min(width, height)
    sizes = [s for s in (model_size, 2 * model_size) if s <= short / 2]
    if not sizes:
        sizes = sorted({max(1, short // 4), max(1, short // 2)})
    return [TileSpec(size_px=s, overlap=overlap, edge=SELO_EDGE) for s in sizes]


def _fit_scales(scene: Scene, specs: list[TileSpec], model_size: int) -> list[TileSpec]:
    """Drop (with a warning) scales whose window is larger than the scene; error when none is left."""
    kept, errors = [], []
    for spec in specs:
        try:
            scene.plan(spec, model_size)
            kept.append(spec)
        except RasterInputError as exc:
            errors.append(str(exc))
    if not kept:
        raise RasterInputError("; ".join(errors))
    for msg in errors:
        log.warning("window scale left out: %s", msg)
    return kept


# ---- output grid ----------------------------------------------------------------------------------------------
def _pixel_size_crs_m(scene: Scene) -> tuple[float, float]:
    """Scene pixel size in metres: CRS units for a projected CRS in linear units, geodesic otherwise."""
    crs = CRS.from_user_input(scene.crs)
    t = scene.transform
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_conversion_factor:
        f = crs.axis_info[0].unit_conversion_factor
        return math.hypot(t.a, t.d) * f, math.hypot(t.b, t.e) * f
    return pixel_size_m(t, crs, scene.width, scene.height)


def output_grid(scene: Scene, resolution_m: float | None = None, cell: float | None = None,
                max_cells: int = DEFAULT_MAX_CELLS) -> OutputGrid:
    """The heatmap grid for ``scene`` (see module docstring for the default rule)."""
    w, h = scene.width, scene.height
    if resolution_m is not None and cell is not None:
        raise OptionError("give the output resolution in metres or as scene pixels per cell, not both")
    if resolution_m is not None:
        if not 0 < resolution_m < math.inf:
            raise OptionError(f"resolution must be a finite number > 0 m, got {resolution_m}")
        if scene.crs is None:
            raise RasterInputError(f"{scene.path}: no CRS, so a resolution in metres cannot be used; "
                                   "give the cell size in scene pixels")
        px, py = _pixel_size_crs_m(scene)
        n_cols, n_rows = math.ceil(w * px / resolution_m - 1e-9), math.ceil(h * py / resolution_m - 1e-9)
        if n_cols > w or n_rows > h:
            raise OptionError(f"resolution {resolution_m:g} m is finer than the scene's pixels ({px:.3g} x {py:.3g} m)")
    elif cell is not None:
        if not 1 <= cell < math.inf:
            raise OptionError(f"cell must be >= 1 scene pixel, got {cell}")
        n_cols, n_rows = math.ceil(w / cell - 1e-9), math.ceil(h / cell - 1e-9)
    elif w * h <= max_cells:
        n_cols, n_rows = w, h
    else:
        auto = math.sqrt(w * h / max_cells)
        n_cols, n_rows = math.ceil(w / auto), math.ceil(h / auto)
    n_cols, n_rows = max(1, n_cols), max(1, n_rows)
    if n_cols * n_rows > HARD_MAX_CELLS:
        raise OptionError(f"an output grid of {n_cols} x {n_rows} cells is too large (limit {HARD_MAX_CELLS:,}); "
                          "choose a coarser resolution")
    cx, cy = w / n_cols, h / n_rows
    return OutputGrid(n_rows, n_cols, cx, cy, scene.transform @ Affine.scale(cx, cy), scene.crs)


def scene_validity(scene: Scene, grid: OutputGrid) -> np.ndarray:
    """The scene's validity (mask, nodata, zero rule) sampled at the output cells' centres."""
    shape = (len(scene.bands), grid.n_rows, grid.n_cols)
    data = scene.ds.read(list(scene.bands), out_shape=shape, resampling=Resampling.nearest)
    masks = scene.ds.read_masks(list(scene.bands), out_shape=shape, resampling=Resampling.nearest)
    return scene.valid_mask(data, masks)


# ---- accumulation and smoothing -------------------------------------------------------------------------------
def _cell_range(start: np.ndarray, stop: np.ndarray, cell: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells whose centre ((j + 0.5) * cell) lies in [start, stop): [j0, j1)."""
    j0 = np.clip(np.ceil(start / cell - 0.5), 0, n).astype(np.int64)
    j1 = np.clip(np.ceil(stop / cell - 0.5), 0, n).astype(np.int64)
    return j0, j1


def accumulate(grid: OutputGrid, windows: Sequence[tuple[np.ndarray, np.ndarray, int, int, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell (sum, count) of window values. ``windows``: (col_offs, row_offs, width, height, values) per scale.

    Rectangle sums through a 2-D difference array: O(windows + cells), whatever the window size.
    """
    diff_s = np.zeros((grid.n_rows + 1, grid.n_cols + 1), np.float64)
    diff_n = np.zeros_like(diff_s)
    for cols, rows, w, h, values in windows:
        if len(values) == 0:
            continue
        j0, j1 = _cell_range(cols.astype(np.float64), cols.astype(np.float64) + w, grid.cell_x, grid.n_cols)
        i0, i1 = _cell_range(rows.astype(np.float64), rows.astype(np.float64) + h, grid.cell_y, grid.n_rows)
        ok = (j1 > j0) & (i1 > i0)
        j0, j1, i0, i1, v = j0[ok], j1[ok], i0[ok], i1[ok], values[ok].astype(np.float64)
        for d, val in ((diff_s, v), (diff_n, np.ones_like(v))):
            np.add.at(d, (i0, j0), val)
            np.add.at(d, (i0, j1), -val)
            np.add.at(d, (i1, j0), -val)
            np.add.at(d, (i1, j1), val)
    total = diff_s.cumsum(0).cumsum(1)[:-1, :-1]
    count = np.rint(diff_n.cumsum(0).cumsum(1)[:-1, :-1])
    return total, count


def gaussian_kernel(sigma: float, max_radius: int | None = None) -> np.ndarray:
    """Normalised 1-D Gaussian taps out to TRUNCATE sigmas, or to ``max_radius`` (a grid's size: taps beyond it
    would only ever meet the zero padding, so a huge sigma costs no more than the grid)."""
    radius = max(1, int(min(math.ceil(TRUNCATE * sigma), max_radius or math.inf)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (pocketfft is fast on these; a power of two can be almost 2x larger)."""
    best = 1 << max(0, int(math.ceil(math.log2(n))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _blur_axis(a: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """Convolve along ``axis`` with a symmetric kernel, zeros outside (direct for short kernels, FFT otherwise)."""
    n, r = a.shape[axis], len(kernel) // 2
    a = np.moveaxis(a, axis, -1)
    if len(kernel) <= DIRECT_TAPS:
        pad = [(0, 0)] * (a.ndim - 1) + [(r, r)]
        ap = np.pad(a, pad)
        out = np.zeros_like(a)
        for t, k in enumerate(kernel):
            out += k * ap[..., t:t + n]
    else:
        size = _fft_size(n + 2 * r)
        spec = np.fft.rfft(a, size, axis=-1) * np.fft.rfft(kernel, size)
        out = np.fft.irfft(spec, size, axis=-1)[..., r:r + n]
    return np.moveaxis(out, -1, axis)


def smooth(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian of the valid cells (normalised convolution); invalid cells stay NaN."""
    out = np.where(valid, values, np.nan)
    if sigma <= 0 or not valid.any():
        return out
    kernel = gaussian_kernel(sigma, max(values.shape) - 1)
    num = np.where(valid, values, 0.0).astype(np.float64)
    den = valid.astype(np.float64)
    for axis in (0, 1):
        num, den = _blur_axis(num, kernel, axis), _blur_axis(den, kernel, axis)
    ok = valid & (den > 1e-9)
    lo, hi = values[valid].min(), values[valid].max()  # a weighted mean stays in range (up to rounding)
    out[ok] = np.clip(num[ok] / den[ok], lo, hi)
    return out


def minmax(values: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(normalised, min, max) over the valid cells; NaN elsewhere; a constant map becomes 0."""
    out = np.full(values.shape, np.nan)
    if not valid.any():
        return out, float("nan"), float("nan")
    lo, hi = float(values[valid].min()), float(values[valid].max())
    span = hi - lo
    if span <= 1e-12:
        log.warning("the query matches every window equally; the heatmap is constant (0)")
        out[valid] = 0.0
    else:
        out[valid] = (values[valid] - lo) / span
    return out, lo, hi


def auto_sigma(grid: OutputGrid, plans) -> float:
    """A quarter of the smallest window stride, in output cells.

    Softens the stride-sized steps of the mean map without moving class boundaries much: on the AID
    mosaics (tests/utils/mosaic.py) mean ROC AUC was 0.994 unsmoothed, 0.990 at stride/4, 0.986 at stride/2.
    """
    strides = [min(p.stride_x / grid.cell_x, p.stride_y / grid.cell_y) for p in plans]
    return AUTO_SIGMA_STRIDES * min(strides) if strides else 0.0


# ---- the API --------------------------------------------------------------------------------------------------
def heatmap(scene: str | os.PathLike | Scene, query: str, scales: Sequence[int | TileSpec] | None = None,
            scales_m: Sequence[float] | None = None, model: ClipModel | str | None = None,
            resolution_m: float | None = None, cell: float | None = None, sigma: float | None = None,
            overlap: float = SELO_OVERLAP, raw: bool = False, max_invalid: float = 0.5, use_index: bool = True,
            index_path: str | os.PathLike | None = None, max_cells: int = DEFAULT_MAX_CELLS,
            progress: ProgressCallback | None = None, overwrite_index: bool = False, **scene_options) -> Heatmap:
    """SeLo heatmap of ``query`` over ``scene`` (a path, or an opened Scene: then no index is used).

    ``scales``: window sizes in pixels (or TileSpecs), ``scales_m``: in metres; default ``default_scales``.
    ``resolution_m`` / ``cell``: output cell size (default: see module docstring). ``sigma``: smoothing in
    output cells (None: ``auto_sigma``; 0: none). Embeddings come from the scene's index when its tiling
    matches (``use_index``; ``index_path`` overrides the sidecar), else are encoded once per scale. An
    ``index_path`` file that cannot be reused (another scene or model, or not an index) is refused unless
    ``overwrite_index``; the sidecar is a cache and is replaced freely.
    """
    start = time.perf_counter()
    model = model if isinstance(model, ClipModel) else load_model(model)
    specs = selo_specs(scales, scales_m, overlap)
    if sigma is not None and not 0 <= sigma < math.inf:
        raise OptionError(f"smoothing sigma must be >= 0 output cells, got {sigma}")
    q = query_embedding(model, query, raw, "heatmap query")
    own = not isinstance(scene, Scene)
    sc = Scene(scene, **scene_options) if own else scene
    try:
        size = model.bundle.image.size
        specs = _fit_scales(sc, specs or default_scales(sc.width, sc.height, size, overlap), size)
        grid = output_grid(sc, resolution_m, cell, max_cells)
        t_enc = time.perf_counter()
        per_scale = scale_embeddings(sc, specs, model, max_invalid, scene_options, use_index=use_index and own,
                                     index_path=index_path, progress=progress, replace_index=overwrite_index)
        t_enc = time.perf_counter() - t_enc
        valid_scene = scene_validity(sc, grid)
        scene_name = str(sc.path)
    finally:
        if own:
            sc.close()
    windows = [_windows(e, q) for e in per_scale]
    total, count = accumulate(grid, windows)
    covered = (count > 0) & valid_scene
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    norm, lo, hi = minmax(mean, covered)
    plans = [e.plan for e in per_scale]
    s = auto_sigma(grid, plans) if sigma is None else float(sigma)
    array = smooth(norm, covered, s).astype(np.float32)
    stats = {"windows_total": sum(len(e.plan) for e in per_scale),
             "windows_used": sum(len(e.tiles) for e in per_scale),
             "windows_skipped": sum(e.skipped for e in per_scale),
             "windows_encoded": sum(len(e.tiles) for e in per_scale if not e.reused),
             "windows_reused": sum(len(e.tiles) for e in per_scale if e.reused),
             "similarity_min": lo, "similarity_max": hi, "seconds": time.perf_counter() - start,
             "seconds_embeddings": t_enc,
             "provider": model.provider, "model": model.run_label}
    log.info("heatmap %r: %d windows (%d reused) at %d scale(s), %d x %d cells, %.1f s", query,
             stats["windows_used"], stats["windows_reused"], len(specs), grid.n_cols, grid.n_rows, stats["seconds"])
    return Heatmap(array, grid.transform, grid.crs, query, np.where(covered, mean, np.nan).astype(np.float32),
                   specs, [(p.tile_width, p.tile_height) for p in plans], (grid.cell_x, grid.cell_y), s,
                   scene_name, stats)


def _windows(e: ScaleEmbeddings, q: np.ndarray):
    cols = np.array([t.col_off for t in e.tiles], np.int64)
    rows = np.array([t.row_off for t in e.tiles], np.int64)
    values = e.embeddings @ q if len(e.tiles) else np.zeros(0)
    return cols, rows, e.plan.tile_width, e.plan.tile_height, values
