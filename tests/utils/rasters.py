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


def set_colorinterp(path: Path, *names: str) -> Path:
    """Rewrite the bands' colour interpretation, e.g. ``set_colorinterp(p, "blue", "green", "red")``."""
    from rasterio.enums import ColorInterp

    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp[name] for name in names]
    return path


def write_with_mask(path: Path, data: np.ndarray, mask: np.ndarray, **kwargs) -> Path:
    """A GeoTIFF with an internal per-dataset mask band (``mask``: H x W, nonzero = valid)."""
    write_geotiff(path, data, **kwargs)
    with rasterio.open(path, "r+") as dst:
        dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return path


def truncate_file(path: Path, keep: int | float) -> Path:
    """Cut a file: keep its first ``keep`` bytes (int; negative: drop that many from the end) or fraction (float)."""
    raw = Path(path).read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    Path(path).write_bytes(raw[:n])
    return path
