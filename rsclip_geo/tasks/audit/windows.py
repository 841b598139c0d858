"""The windows an audit looks at inside each unit, and their embeddings.

Windows come from the scene's own tile plan (``plan_tiles``: the tile size of
the model or ``--tile-size``/``--tile-size-m``, the overlap asked for):

- a unit's windows are the plan's tiles whose centre lies inside the unit and
  at least ``min_inside`` (half) of whose area does; when there are more than
  ``max_windows`` (16), that many are taken evenly spread over them (row-major);
- a unit that holds no such tile (smaller than a tile, or thin) gets one
  window of tile size centred on it (its centroid, or a point inside it when
  the centroid falls outside), moved back inside the scene where it would
  leave it, as the tiler's ``shift`` edge does.

The unit is first cut to the scene; a unit wholly outside gets no window.
Windows are read through ``Scene.read_chw`` and preprocessed and encoded like
every tile (``Preprocessor.from_chw``, ``ClipModel.encode_images``); windows
with more than ``max_invalid`` invalid pixels are skipped, invalid pixels of
the others take the window's mean valid colour. A window shared by several
units is encoded once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from rasterio.windows import Window

from ...runtime.encoder import ClipModel
from ...raster.scene import Scene
from ...raster.tile_stream import fill_invalid
from ...raster.tiling import TilePlan

WindowKey = tuple[int, int]  # (row_off, col_off) in scene pixels; size from the plan
ProgressCallback = Callable[[int, int], None]


def to_pixels(geom, transform):
    """A geometry in scene CRS -> the same in (column, row) pixel coordinates of the scene."""
    from shapely import affinity

    inv = ~transform
    return affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def _candidates(lo: float, hi: float, stride: int, size: int, n: int) -> range:
    """Tile indices along one axis whose span [i*stride, i*stride+size) may meet [lo, hi)."""
    first = max(0, math.floor((lo - size) / stride))
    return range(first, min(n - 1, math.floor(hi / stride)) + 1)


def unit_windows(geom_px, plan: TilePlan, max_windows: int = 16, min_inside: float = 0.5) -> list[WindowKey]:
    """The windows of one unit, given in scene pixel coordinates (see the module docstring)."""
    import shapely
    from shapely.geometry import box

    if geom_px is None or geom_px.is_empty:
        return []
    geom = geom_px.intersection(box(0, 0, plan.scene_width, plan.scene_height))
    if geom.is_empty or geom.area <= 0:
        return []
    shapely.prepare(geom)
    minx, miny, maxx, maxy = geom.bounds
    th, tw = plan.tile_height, plan.tile_width
    keys, boxes = [], []
    for r in _candidates(miny, maxy, plan.stride_y, th, plan.n_rows):
        for c in _candidates(minx, maxx, plan.stride_x, tw, plan.n_cols):
            t = plan.tile(r, c)
            keys.append((t.row_off, t.col_off))
            boxes.append(box(t.col_off, t.row_off, t.col_off + tw, t.row_off + th))
    if boxes:
        boxes = np.asarray(boxes, dtype=object)
        centres = shapely.centroid(boxes)
        inside = shapely.contains(geom, centres)
        frac = shapely.area(shapely.intersection(boxes, geom)) / float(tw * th)
        keep = np.flatnonzero(inside & (frac >= min_inside))
        if len(keep):
            if len(keep) > max_windows:
                keep = keep[np.unique(np.linspace(0, len(keep) - 1, max_windows).round().astype(int))]
            return [keys[i] for i in keep]
    centre = geom.centroid
    if not geom.contains(centre):
        centre = geom.representative_point()
    col = min(max(round(centre.x - tw / 2), 0), max(plan.scene_width - tw, 0))
    row = min(max(round(centre.y - th / 2), 0), max(plan.scene_height - th, 0))
    return [(int(row), int(col))]


@dataclass
class WindowEmbeddings:
    keys: list[WindowKey]  # every window asked for, in reading order
    row: dict[WindowKey, int]  # window -> its row in ``embeddings``; skipped windows are absent
    embeddings: np.ndarray  # float32 [n_encoded, D], L2-normalised
    skipped: int


def encode_windows(scene: Scene, plan: TilePlan, keys: Sequence[WindowKey], model: ClipModel,
                   max_invalid: float = 0.5, progress: ProgressCallback | None = None) -> WindowEmbeddings:
    """Read, check, preprocess and encode each distinct window once, in row-major order, in model batches."""
    keys = sorted(set(keys))
    th, tw = plan.tile_height, plan.tile_width
    size, bs = model.preprocess.spec.size, model.batch_size
    pixels = np.empty((bs, 3, size, size), dtype=np.float32)
    pending: list[WindowKey] = []
    row: dict[WindowKey, int] = {}
    chunks: list[np.ndarray] = []
    skipped = 0

    def flush():
        chunks.append(model.encode_images(pixels[:len(pending)]))
        for key in pending:
            row[key] = len(row)
        pending.clear()

    with scene.gdal_env():
        for done, key in enumerate(keys, 1):
            chw, valid = scene.read_chw(Window(key[1], key[0], tw, th))
            frac = float(valid.mean())
            if frac <= 0 or 1.0 - frac > max_invalid:
                skipped += 1
            else:
                model.preprocess.from_chw(fill_invalid(chw, valid), out=pixels[len(pending)])
                pending.append(key)
                if len(pending) == bs:
                    flush()
            if progress and (done % bs == 0 or done == len(keys)):
                progress(done, len(keys))
        if pending:
            flush()
    emb = np.concatenate(chunks) if chunks else np.zeros((0, model.embed_dim), np.float32)
    return WindowEmbeddings(keys, row, emb, skipped)
