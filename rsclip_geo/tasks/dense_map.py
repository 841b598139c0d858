"""Dense similarity maps: one forward pass of the bundle's dense head per large window, stitched on the scene grid.

1. The scene is covered by a grid of *cells* of ``stride x scale`` scene pixels (``stride``: the dense head's
   output stride, 32 for the default model; ``scale``: scene pixels per model-input pixel, 1 = native). Windows
   of ``window`` model pixels (the bundle's ``dense.window``: 4 x 4 cells for the default model) start on cell
   corners every ``step = (1 - overlap) x window``; the last row/column of windows is moved back so that it ends
   on the last cell (a scene smaller than one window gets one window fitted to it, at least the model's input
   size, the part past the scene edge padded and counted invalid). ``staggered`` (the default, with overlap 0)
   adds a second grid of windows offset by half a step along both axes (inside the scene only; along one axis
   for a strip one window high or wide), so every cell
   away from the scene edge is seen from two windows whose edges fall in different places: nearly the seam-free
   map of a half-window overlap (4 windows per cell) at about a third more windows than no overlap, instead of
   4x (bench/dense_eval.py).
2. Each row of windows is read as one strip, resampled by ``1 / scale`` if needed and normalised; each window cut
   from it (at whole cells) has its invalid pixels filled with the window's mean valid colour and is run through
   the dense encoder: one embedding per cell. A cell's score is the cosine similarity of its embedding to the
   query (the prompt ensemble) minus ``negative_weight`` x its similarity to each negative prompt (as in
   ``search``). Cells with more than ``max_invalid`` invalid pixels are left out. The embeddings do not depend
   on the query: with a ``cache`` (embeddings/dense_cells.py) they are read from the scene's saved cells when those
   match, and saved for the next query otherwise.
3. Overlapping windows are stitched by averaging each cell's scores (sum and count on the cell grid: memory grows
   with the number of cells, 1/1024 of the pixels at stride 32, never with the number of windows).
4. The cell map is interpolated bilinearly (cell centres, NaN-aware) onto the output grid: the scene's CRS and
   exact bounds, at the scene's resolution up to ``max_cells`` output cells (as ``heatmap``), NaN where the
   scene is invalid. Values are raw scores (cosine units), not normalised.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from affine import Affine
from pyproj import CRS
from rasterio.windows import Window

from ..embeddings.dense_cells import DenseCellCache
from ..runtime.encoder import ClipModel, l2_normalize
from ..errors import BundleError, OptionError, RasterInputError
from .heatmap import DEFAULT_MAX_CELLS, HARD_MAX_CELLS, OutputGrid, output_grid, scene_validity
from ..raster.scene import Scene
from ..outputs.writers import write_float_raster

log = logging.getLogger(__name__)

DENSE_OVERLAP = 0.0  # with the staggered second grid (see the module docstring)
INTERP_ROWS = 512  # output rows interpolated at a time (bounded temporaries on large grids)

ProgressCallback = Callable[[int, int], None]


@dataclass
class DenseMap:
    """A query's dense score map: ``array`` on the output grid (NaN = no data), ``cells`` on the cell grid."""

    array: np.ndarray  # float32 [rows, cols]
    transform: Affine
    crs: CRS | None
    query: str
    cells: np.ndarray  # float32 [cell rows, cell cols], NaN where no valid window covered the cell
    cell_transform: Affine  # transform of the cell grid (one pixel per cell)
    cell_px: float  # scene pixels per cell (stride x scale)
    grid: OutputGrid
    stats: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.array.shape

    def tags(self) -> dict:
        finite = self.array[np.isfinite(self.array)]
        return {"QUERY": self.query,
                "METHOD": f"dense head ({self.stats.get('method', '?')}), one pass per window, cells averaged "
                          "over the windows covering them, bilinear to the output grid",
                "WINDOWS": f"{self.stats.get('windows', '')} (overlap {self.stats.get('overlap', '')}"
                           f"{', staggered' if self.stats.get('staggered') else ''})",
                "VALUES": "cosine similarity to the query (minus negative_weight x similarity to each negative)",
                "CELL_PX": f"{self.cell_px:g}", "WINDOW_PX": str(self.stats.get("window_px", "")),
                "SCORE_MIN": f"{finite.min():.6g}" if finite.size else "nan",
                "SCORE_MAX": f"{finite.max():.6g}" if finite.size else "nan"}

    def write(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Float32 COG on the output grid (NaN nodata), query and method as tags."""
        return write_float_raster(path, self.array, self.transform, self.crs, overwrite=overwrite,
                                  description=f"dense score: {self.query}", tags=self.tags())


@dataclass(frozen=True)
class WindowPlan:
    """Window origins in cells (one or two grids, each rows x cols), window size in cells, the cell grid's size
    and cell size in scene pixels, and the choices that made them (stride, scale, overlap, stagger)."""

    grids: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # ((row origins, col origins), ...)
    win_rows: int
    win_cols: int
    n_rows: int
    n_cols: int
    cell_px: float
    stride: int = 0
    scale: float = 1.0
    overlap: float = 0.0
    staggered: bool = False

    def __len__(self) -> int:
        return sum(len(r) * len(c) for r, c in self.grids)

    def layout(self) -> dict:
        """What, besides the scene, model and scene options, decides the windows (the dense cell cache's key)."""
        return {"stride": self.stride, "scale": float(self.scale), "cell_px": float(self.cell_px),
                "overlap": float(self.overlap), "staggered": bool(self.staggered),
                "window_cells": [self.win_rows, self.win_cols], "cells": [self.n_rows, self.n_cols],
                "windows": len(self)}

    def origins(self):
        """(row, col) of every window, in the order they are encoded (grid by grid, row by row)."""
        for rows, cols in self.grids:
            for r in rows:
                for c in cols:
                    yield r, c


def _starts(n: int, win: int, step: int) -> tuple[int, ...]:
    if n <= win:
        return (0,)
    out = list(range(0, n - win, step))
    out.append(n - win)
    return tuple(sorted(set(out)))


def _offset_starts(n: int, win: int, step: int) -> tuple[int, ...]:
    """The staggered grid's origins: half a step after the main grid's, windows wholly inside the scene only."""
    return tuple(range(step // 2, n - win + 1, step)) if step >= 2 and n > win else ()


def plan_windows(width: int, height: int, stride: int, scale: float, window: int, min_window: int,
                 overlap: float = DENSE_OVERLAP, where: str = "scene", staggered: bool = True) -> WindowPlan:
    """Cell grid and window origins for a ``width x height`` scene (see the module docstring)."""
    if not 0 <= overlap < 1:
        raise OptionError(f"overlap must be in [0, 1), got {overlap}")
    if not 0 < scale < math.inf:
        raise OptionError(f"scale must be a positive number of scene pixels per model pixel, got {scale}")
    cell_px = stride * scale
    if width < cell_px or height < cell_px:
        raise RasterInputError(f"{where}: {width} x {height} pixels is smaller than one dense cell "
                               f"({cell_px:g} scene pixels = stride {stride} x scale {scale:g}); use a smaller "
                               "--scale")
    n_cols, n_rows = math.ceil(width / cell_px - 1e-9), math.ceil(height / cell_px - 1e-9)
    if n_cols * n_rows > HARD_MAX_CELLS:  # a tiny scale zooms in: 1e-7 would ask for 10^16 cells
        raise OptionError(f"{where}: scale {scale:g} makes {n_cols:,} x {n_rows:,} dense cells of {cell_px:g} scene "
                          f"pixels (limit {HARD_MAX_CELLS:,}); use a larger --scale")
    cells, min_cells = window // stride, max(1, math.ceil(min_window / stride))
    win_cols, win_rows = (min(cells, max(n, min_cells)) for n in (n_cols, n_rows))
    step_c = max(1, round(win_cols * (1 - overlap)))
    step_r = max(1, round(win_rows * (1 - overlap)))
    grids = [(_starts(n_rows, win_rows, step_r), _starts(n_cols, win_cols, step_c))]
    if staggered:
        extra_r, extra_c = _offset_starts(n_rows, win_rows, step_r), _offset_starts(n_cols, win_cols, step_c)
        if extra_r or extra_c:  # a strip one window high (or wide) is staggered along its length only
            grids.append((extra_r or grids[0][0], extra_c or grids[0][1]))
    return WindowPlan(tuple(grids), win_rows, win_cols, n_rows, n_cols, cell_px, stride, scale, overlap, staggered)


def _normalise(chw: np.ndarray, mean, std) -> np.ndarray:
    """uint8 3xHxW -> float32 in the model's input units."""
    x = chw.astype(np.float32)
    x /= 255.0
    x -= np.asarray(mean, np.float32).reshape(3, 1, 1)
    x /= np.asarray(std, np.float32).reshape(3, 1, 1)
    return x


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A window with its invalid pixels set to its mean valid colour (a copy; the window itself if all valid)."""
    if valid.all() or not valid.any():
        return x
    x = x.copy()
    x[:, ~valid] = x[:, valid].mean(axis=1)[:, None]
    return x


def _resize(chw: np.ndarray, valid: np.ndarray, size: tuple[int, int], interpolation: str):
    """Resample a window to ``size`` (width, height) model pixels (antialiased when shrinking)."""
    from PIL import Image

    from ..runtime.preprocess import _PIL_FILTERS

    if chw.shape[2] == size[0] and chw.shape[1] == size[1]:
        return chw, valid
    img = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), mode="RGB")
    out = np.asarray(img.resize(size, _PIL_FILTERS[interpolation])).transpose(2, 0, 1)
    v = np.asarray(Image.fromarray(valid.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    return out, v


def _row_windows(scene: Scene, plan: WindowPlan, r: int, cols: Sequence[int], stride: int, model: ClipModel):
    """Yield (c, normalised float32 [3, h, w], cell validity fraction [h/stride, w/stride]) for the windows of row
    ``r`` at column origins ``cols``: one GDAL read, resampling and normalisation of the strip they share."""
    px = plan.cell_px
    row0, height = int(round(r * px)), int(round(plan.win_rows * px))
    col0_strip = int(round(cols[0] * px))
    width = int(round((cols[-1] + plan.win_cols) * px)) - col0_strip
    with scene.gdal_env():
        strip, strip_valid = scene.read_chw(Window(col0_strip, row0, width, height))
    spec = model.bundle.image
    # resampled and normalised once per strip: windows are cut from it at their cell offsets (stride model px)
    size = ((cols[-1] + plan.win_cols - cols[0]) * stride, plan.win_rows * stride)
    strip, strip_valid = _resize(strip, strip_valid, size, spec.interpolation)
    x = _normalise(strip, spec.mean, spec.std)
    w = plan.win_cols * stride
    for c in cols:
        a = (c - cols[0]) * stride
        valid = strip_valid[:, a:a + w]
        frac = valid.reshape(plan.win_rows, stride, plan.win_cols, stride).mean(axis=(1, 3))
        yield c, _fill_invalid(x[:, :, a:a + w], valid), frac


def _query_vectors(model: ClipModel, query: str, negatives: Sequence[str], raw: bool) -> tuple[np.ndarray, ...]:
    from ..errors import LabelError

    texts = [query] + list(negatives)
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise LabelError("empty query or negative prompt; give the text to find, e.g. 'storage tanks'")
    emb = model.encode_text([t.strip() for t in texts]) if raw else model.class_embeddings([t.strip() for t in texts])
    return emb[0], emb[1:]


def _encoded_windows(scene: Scene, model: ClipModel, plan: WindowPlan, per_run: int):
    """Yield (index of the first window, L2-normalised cell embeddings [k, rows, cols, D], valid fractions
    [k, rows, cols]) for the plan's windows in order, ``per_run`` windows per dense-encoder run."""
    stride = model.bundle.dense.stride
    batch: list = []
    first = 0

    def run():
        emb = l2_normalize(model.encode_dense(np.stack([x for x, _ in batch])))
        return first, emb, np.stack([f for _, f in batch])

    for rows, cols in plan.grids:
        for r in rows:
            for _, x, frac in _row_windows(scene, plan, r, cols, stride, model):
                batch.append((x, frac))
                if len(batch) == per_run:
                    yield run()
                    first += len(batch)
                    batch = []
    if batch:
        yield run()


def cell_scores(scene: Scene, model: ClipModel, q: np.ndarray, negatives: np.ndarray, plan: WindowPlan,
                negative_weight: float = 0.5, max_invalid: float = 0.5, progress: ProgressCallback | None = None,
                cache: DenseCellCache | None = None) -> tuple[np.ndarray, str]:
    """Mean score per cell over the windows covering it (NaN where none did; see the module docstring), and
    where the cell embeddings came from: 'encoded', or with a ``cache`` 'reused', 'saved' or 'not saved'."""
    stride = model.bundle.dense.stride
    # windows per dense-encoder run: as many pixels as a batch of the model's input tiles
    per_run = max(1, (model.batch_size * model.bundle.image.size ** 2) // (plan.win_rows * plan.win_cols * stride ** 2))
    origins = list(plan.origins())
    shape, dim = (len(plan), plan.win_rows, plan.win_cols), model.embed_dim
    total = np.zeros((plan.n_rows, plan.n_cols), np.float64)
    count = np.zeros_like(total)

    def add(first: int, emb: np.ndarray, frac: np.ndarray) -> None:
        score = emb @ q
        if len(negatives):
            score -= negative_weight * (emb @ negatives.T).sum(axis=-1)
        for (r, c), s, f in zip(origins[first:first + len(emb)], score, frac):
            h, w = min(plan.win_rows, plan.n_rows - r), min(plan.win_cols, plan.n_cols - c)
            ok = f[:h, :w] >= 1.0 - max_invalid
            total[r:r + h, c:c + w] += np.where(ok, s[:h, :w], 0.0)
            count[r:r + h, c:c + w] += ok
        if progress is not None:
            progress(first + len(emb), len(plan))

    def result() -> np.ndarray:
        return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)

    if cache is not None:
        reason = cache.stale_reason(plan.layout(), shape, dim)
        if reason is None:
            try:
                for first, rec in cache.read(shape, dim, per_run):
                    add(first, rec["embedding"].astype(np.float32), rec["valid"].astype(np.float32))
                log.info("dense cells of %s reused from %s", scene.path, cache.npy)
                return result(), "reused"
            except (OSError, ValueError) as exc:  # changed under us since the check
                reason = str(exc)
                total[:], count[:] = 0, 0
        log.info("encoding the dense cells of %s (%s: %s)", scene.path, cache.npy.name, reason)
    writer = cache.writer(plan.layout(), shape, dim) if cache is not None else None
    try:
        for first, emb, frac in _encoded_windows(scene, model, plan, per_run):
            if writer is not None:  # scored as stored, so the next run's map is this one
                emb16 = emb.astype(np.float16)
                writer.append(emb16, frac.astype(np.float16))
                emb = emb16.astype(np.float32)
            add(first, emb, frac)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is None:
        return result(), "encoded"
    return result(), "saved" if writer.commit() else "not saved"


def _linear_taps(n_out: int, out_px: float, cell_px: float, n_cells: int):
    """For each output position along one axis: its two neighbouring cells and the weight of the second (linear
    interpolation between cell centres, clamped at the edges as scipy's ``mode='nearest'``)."""
    pos = np.clip(((np.arange(n_out) + 0.5) * out_px) / cell_px - 0.5, 0, n_cells - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), max(n_cells - 2, 0))
    return i0, np.minimum(i0 + 1, n_cells - 1), pos - i0


def to_output_grid(cells: np.ndarray, cell_px: float, grid: OutputGrid) -> np.ndarray:
    """Bilinear interpolation of the cell map (values at cell centres) at the output cells' centres; NaN cells
    are left out of the weights (a value next to a gap comes from its valid neighbours only).

    Why separable: both grids are axis-aligned, so bilinear = linear along rows then along columns; two gathers
    per block instead of scipy's per-point coordinates (~10x faster, same values up to float rounding)."""
    ok = np.isfinite(cells)
    stacked = np.stack([np.where(ok, cells, 0.0), ok]).astype(np.float64)  # values, weights
    out = np.full((grid.n_rows, grid.n_cols), np.nan, np.float32)
    x0, x1, tx = _linear_taps(grid.n_cols, grid.cell_x, cell_px, cells.shape[1])
    y0, y1, ty = _linear_taps(grid.n_rows, grid.cell_y, cell_px, cells.shape[0])
    for r0 in range(0, grid.n_rows, INTERP_ROWS):
        r1 = min(grid.n_rows, r0 + INTERP_ROWS)
        t = ty[r0:r1, None]
        rows = stacked[:, y0[r0:r1]] * (1 - t) + stacked[:, y1[r0:r1]] * t  # [2, block, cell cols]
        num, den = rows[:, :, x0] * (1 - tx) + rows[:, :, x1] * tx  # [block, output cols] each
        out[r0:r1] = np.where(den > 1e-6, num / np.maximum(den, 1e-12), np.nan)
    return out


def dense_map(scene: Scene, model: ClipModel, query: str, negatives: Sequence[str] = (), negative_weight: float = 0.5,
              raw: bool = False, scale: float = 1.0, window: int | None = None, overlap: float = DENSE_OVERLAP,
              max_invalid: float = 0.5, max_cells: int = DEFAULT_MAX_CELLS,
              progress: ProgressCallback | None = None, staggered: bool = True,
              cache: DenseCellCache | None = None) -> DenseMap:
    """The dense score map of ``query`` over an opened ``scene`` (see the module docstring).

    ``window``: window side in model pixels (default: the bundle's ``dense.window``; a multiple of the stride).
    ``staggered``: add the half-step offset grid of windows (see the module docstring). ``cache``: the scene's
    dense cell cache (embeddings/dense_cells.py) to reuse or fill; None encodes every window and keeps nothing.
    """
    start = time.perf_counter()
    spec = model.bundle.dense
    if spec is None:
        raise BundleError(f"model {model.bundle.name!r} has no dense head (model.json has no 'dense'); export one "
                          "with `rsclip-geo models export ... --dense`")
    window = spec.window if window is None else int(window)
    if window < spec.stride or window % spec.stride:
        raise OptionError(f"window must be a positive multiple of the dense stride {spec.stride} px, got {window}")
    q, neg = _query_vectors(model, query, negatives, raw)
    plan = plan_windows(scene.width, scene.height, spec.stride, scale, window, model.bundle.image.size, overlap,
                        str(scene.path), staggered)
    t0 = time.perf_counter()
    cells, source = cell_scores(scene, model, q, neg, plan, negative_weight, max_invalid, progress, cache)
    t_enc = time.perf_counter() - t0
    grid = output_grid(scene, max_cells=max_cells)
    array = to_output_grid(cells, plan.cell_px, grid)
    with scene.gdal_env():
        array[~scene_validity(scene, grid)] = np.nan
    stats = {"windows": len(plan), "window_px": f"{plan.win_cols * spec.stride}x{plan.win_rows * spec.stride}",
             "overlap": overlap, "staggered": len(plan.grids) > 1, "cells_from": source,
             "cells": f"{plan.n_cols}x{plan.n_rows}", "cells_covered": int(np.isfinite(cells).sum()),
             "method": spec.method, "scale": scale, "seconds": time.perf_counter() - start,
             "seconds_windows": t_enc, "provider": model.provider, "model": model.bundle.name}
    log.info("dense map %r: %d windows of %s px (%s), %s cells, %.1f s", query, len(plan), stats["window_px"],
             source, stats["cells"], stats["seconds"])
    cell_transform = scene.transform @ Affine.scale(plan.cell_px, plan.cell_px)
    return DenseMap(array, grid.transform, grid.crs, query, cells, cell_transform, plan.cell_px, grid, stats)
