"""Generated GeoTIFFs for tests: known pixels, known geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 220)


def write_geotiff(path: Path, data: np.ndarray, crs="EPSG:32633", transform: Affine | None = None,
                  nodata=None, **profile) -> Path:
    """``data`` is bands x H x W (or H x W); default transform: 10 m pixels in UTM 33N."""
    if data.ndim == 2:
        data = data[None]
    transform = transform if transform is not None else Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **profile) as dst:
        dst.write(data)
    return path


def colour_blocks(layout: list[list[tuple[int, int, int]]], block: int) -> np.ndarray:
    """3 x H x W uint8 image made of ``block``-pixel squares with the given colours (rows of columns)."""
    rows = [np.concatenate([np.broadcast_to(np.array(c, np.uint8)[:, None, None], (3, block, block))
                            for c in row], axis=2) for row in layout]
    return np.ascontiguousarray(np.concatenate(rows, axis=1))
