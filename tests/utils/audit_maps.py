"""Label layers and class rasters over AID mosaics with a known share of wrong labels (for the audit).

A mosaic (tests.utils.mosaic) is a grid of 150 px AID images with a known class
per cell. ``cell_polygons`` turns its cells into polygons labelled with their
class's words, ``n_wrong`` of them relabelled to another class (seeded);
``class_raster`` writes the cells as a class raster on its own grid (10 m
pixels over the 1 m mosaic), ``n_wrong`` cells given another class.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from affine import Affine

from tests.utils.mosaic import CELL, Mosaic, class_query
from tests.utils.rasters import write_geotiff


def _wrong_layout(mosaic: Mosaic, n_wrong: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(layout with ``n_wrong`` cells moved to another class, bool mask of those cells), seeded."""
    rng = random.Random(f"audit-wrong:{seed}:{n_wrong}")
    layout = mosaic.layout.copy()
    flat = layout.reshape(-1)
    wrong = np.zeros(flat.shape, bool)
    for k in rng.sample(range(flat.size), n_wrong):
        flat[k] = rng.choice([c for c in range(len(mosaic.classes)) if c != flat[k]])
        wrong[k] = True
    return layout, wrong.reshape(layout.shape)


def cell_polygons(mosaic: Mosaic, n_wrong: int = 0, seed: int = 0, crs: str | None = None):
    """One square polygon per cell (row-major) with columns row, col, true, label (words), wrong."""
    import geopandas as gpd
    from shapely.geometry import box

    layout, wrong = _wrong_layout(mosaic, n_wrong, seed)
    t = mosaic.transform
    rows, cols = layout.shape
    geoms, data = [], {"row": [], "col": [], "true": [], "label": [], "wrong": []}
    for r in range(rows):
        for c in range(cols):
            x0, y0 = t @ (c * CELL, r * CELL)
            x1, y1 = t @ ((c + 1) * CELL, (r + 1) * CELL)
            geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            data["row"].append(r)
            data["col"].append(c)
            data["true"].append(class_query(mosaic.classes[mosaic.layout[r, c]]))
            data["label"].append(class_query(mosaic.classes[layout[r, c]]))
            data["wrong"].append(bool(wrong[r, c]))
    gdf = gpd.GeoDataFrame(data, geometry=geoms, crs=mosaic.crs)
    return gdf.to_crs(crs) if crs else gdf


def class_raster(mosaic: Mosaic, path: Path, n_wrong: int = 0, seed: int = 0, pixel: int = 10
                 ) -> tuple[Path, list[str], float]:
    """Write the cells as a uint8 class raster of ``pixel`` m (``n_wrong`` cells wrong): (path, names, accuracy)."""
    layout, wrong = _wrong_layout(mosaic, n_wrong, seed)
    per_cell = CELL // pixel
    data = np.kron(layout, np.ones((per_cell, per_cell), np.int64)).astype(np.uint8)
    t = mosaic.transform
    transform = Affine(t.a * pixel, t.b, t.c, t.d, t.e * pixel, t.f)
    write_geotiff(Path(path), data, crs=mosaic.crs, transform=transform, nodata=255)
    names = [class_query(c) for c in mosaic.classes]
    return Path(path), names, 1.0 - float(wrong.mean())
