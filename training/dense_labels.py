"""Region-category labels for the cells of a dense feature map, from detection boxes (FarSLIP-style supervision).

A cell is ``stride`` model pixels square; boxes are in the same (model-pixel) coordinates. Each cell gets

- class ``k`` when boxes of class ``k`` cover at least ``min_cover`` of it (the class covering most wins), or when
  it holds the centre of a box of class ``k`` smaller than a cell (so every small object labels one cell);
- ``background`` (= the number of classes) when all boxes together cover at most ``background_max_cover`` of it;
- ``IGNORE`` (-1) otherwise: cells on an object's edge are neither the object nor background.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE = -1


def _cover(boxes: Sequence[tuple[float, float, float, float]], n_rows: int, n_cols: int, stride: int) -> np.ndarray:
    """Share of each cell covered by the union of ``boxes`` (x0, y0, x1, y1), on a one-model-pixel raster."""
    mask = np.zeros((n_rows * stride, n_cols * stride), bool)
    for x0, y0, x1, y1 in boxes:
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(mask.shape[1], int(np.ceil(x1))), min(mask.shape[0], int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask.reshape(n_rows, stride, n_cols, stride).mean(axis=(1, 3))


def cell_labels(boxes: Sequence[tuple[int, tuple[float, float, float, float]]], n_rows: int, n_cols: int,
                stride: int, n_classes: int, min_cover: float = 0.5,
                background_max_cover: float = 0.0) -> np.ndarray:
    """int8 [n_rows, n_cols]: class index, ``n_classes`` (background) or IGNORE, per cell (see the module doc).

    ``boxes``: (class index in [0, n_classes), (x0, y0, x1, y1)) in model pixels of the cell grid's image.
    """
    if not 0 < min_cover <= 1 or not 0 <= background_max_cover < min_cover:
        raise ValueError(f"need 0 <= background_max_cover ({background_max_cover}) < min_cover ({min_cover}) <= 1")
    for k, _ in boxes:
        if not 0 <= k < n_classes:
            raise ValueError(f"box class {k} outside [0, {n_classes})")
    labels = np.full((n_rows, n_cols), IGNORE, np.int8)
    best = np.zeros((n_rows, n_cols), np.float64)
    for k in sorted({k for k, _ in boxes}):
        cover = _cover([b for c, b in boxes if c == k], n_rows, n_cols, stride)
        take = (cover >= min_cover) & (cover > best)
        labels[take], best[take] = k, cover[take]
    for k, (x0, y0, x1, y1) in boxes:  # small objects: the cell holding the centre
        if (x1 - x0) * (y1 - y0) < stride * stride:
            r, c = int((y0 + y1) / 2 // stride), int((x0 + x1) / 2 // stride)
            if 0 <= r < n_rows and 0 <= c < n_cols and labels[r, c] == IGNORE:
                labels[r, c] = k
    total = _cover([b for _, b in boxes], n_rows, n_cols, stride)
    labels[(total <= background_max_cover) & (labels == IGNORE)] = n_classes
    return labels


def window_origins(n: int, win: int, step: int) -> list[int]:
    """Window starts along one axis of ``n`` cells: every ``step`` cells, the last one ending on the last cell (as
    ``rsclip_geo.tasks.dense_map`` plans its windows)."""
    if n <= win:
        return [0]
    return sorted(set(list(range(0, n - win, step)) + [n - win]))
