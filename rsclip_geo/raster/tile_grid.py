"""Per-tile values (search scores, class indices) as a raster on the scene's own grid.

A raster with one pixel per tile stride is only right when the scene is a whole number
of strides: otherwise its last row/column hangs past the scene (edge 'pad') or
mislocates the shifted last tile (edge 'shift'). So tile rasters are written on the
heatmap's output grid instead (heatmap.output_grid's rule): the scene's CRS and exact
bounds, at the scene's own resolution up to ``max_cells`` pixels, else coarser cells that
still span exactly the scene. Each cell takes the value of the tile that owns its centre:
along each axis, tile ``min(floor(p / stride), n - 1)`` when it covers ``p`` (the part of
a tile its next neighbour does not overlap; the shifted last tile owns the scene's edge).
Cells no tile covers (edge 'drop') or whose tile was skipped get ``fill``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from affine import Affine

from ..tasks.heatmap import DEFAULT_MAX_CELLS, OutputGrid, output_grid
from .tiling import TilePlan


def scene_grid(plan: TilePlan, max_cells: int = DEFAULT_MAX_CELLS) -> OutputGrid:
    """The output grid of the plan's scene: its CRS and bounds, its resolution up to ``max_cells`` cells."""
    scene = SimpleNamespace(width=plan.scene_width, height=plan.scene_height, transform=plan.transform,
                            crs=plan.crs, path="scene")
    return output_grid(scene, max_cells=max_cells)


def _owners(n_cells: int, cell: float, n_scene: int, tile: int, stride: int, n_tiles: int, shift: bool
            ) -> np.ndarray:
    """Tile index (along one axis) owning each cell centre, -1 where no tile covers it."""
    centre = (np.arange(n_cells, dtype=np.float64) + 0.5) * cell
    k = np.minimum(np.floor(centre / stride).astype(np.int64), n_tiles - 1)
    off = k * stride
    if shift:
        off = np.minimum(off, n_scene - tile)
    covered = (centre >= off) & (centre < off + tile)
    return np.where(covered, k, -1)


def on_scene_grid(plan: TilePlan, tile_values: np.ndarray, fill, max_cells: int = DEFAULT_MAX_CELLS
                  ) -> tuple[np.ndarray, Affine]:
    """``tile_values`` ([n_rows, n_cols] of the plan, ``fill`` for skipped tiles) on the scene grid:
    (array, transform)."""
    if tile_values.shape != (plan.n_rows, plan.n_cols):
        raise ValueError(f"tile values of shape {tile_values.shape} do not match the plan's "
                         f"{plan.n_rows} x {plan.n_cols} tiles")
    grid = scene_grid(plan, max_cells)
    shift = plan.edge == "shift"
    rows = _owners(grid.n_rows, grid.cell_y, plan.scene_height, plan.tile_height, plan.stride_y, plan.n_rows, shift)
    cols = _owners(grid.n_cols, grid.cell_x, plan.scene_width, plan.tile_width, plan.stride_x, plan.n_cols, shift)
    out = tile_values[np.maximum(rows, 0)[:, None], np.maximum(cols, 0)[None, :]]
    out[(rows < 0)[:, None] | (cols < 0)[None, :]] = fill
    return out, grid.transform

