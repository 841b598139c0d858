"""Mask-to-Box (RemoteCLIP): segmentation masks -> per-object boxes -> B2C captions.

Segmentation sets carry no boxes; each connected component of one class is taken as one object.
Components use 8-connectivity by default because rasterised outlines touch diagonally; objects that
touch each other merge into one component (a known limit of M2B, it under-counts dense scenes).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from rsclip_geo.errors import MissingDependencyError

from .b2c import b2c_captions
from .boxes import Box
from .errors import DatasetError

MIN_AREA = 16  # pixels; smaller components are usually label noise or slivers cut by the tile edge


def _label(binary: np.ndarray, connectivity: int):
    try:
        from scipy import ndimage
    except ImportError:
        raise MissingDependencyError("Mask-to-Box needs scipy: pip install scipy") from None
    structure = np.ones((3, 3), bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    labels, _ = ndimage.label(binary, structure=structure)
    return labels, ndimage.find_objects(labels), np.bincount(labels.ravel())


def mask_to_boxes(mask: np.ndarray, classes: Mapping[int, str], min_area: int = MIN_AREA,
                  connectivity: int = 8) -> list[Box]:
    """Boxes of the connected components of every class id in `classes`, ordered by class then row-major.

    Ids missing from `classes` (background, ignore) are skipped. Boxes are on pixel edges:
    a component spanning columns 3..7 gives xmin=3, xmax=8. Components under `min_area` pixels are dropped.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"mask must be 2-D (rows, cols) of class ids, got shape {mask.shape}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    boxes = []
    for class_id, name in classes.items():
        binary = mask == class_id
        if not binary.any():
            continue
        labels, slices, areas = _label(binary, connectivity)
        for idx, sl in enumerate(slices, start=1):
            if sl is None or areas[idx] < min_area:
                continue
            rows, cols = sl
            boxes.append(Box(name, float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)))
    return boxes


def mask_captions(mask: np.ndarray, classes: Mapping[int, str], seed: int | str = 0, min_area: int = MIN_AREA,
                  connectivity: int = 8, **caption_kwargs) -> tuple[list[Box], list[str]]:
    """M2B then B2C: (boxes, five captions) for one mask; captions are [] when no component survives."""
    boxes = mask_to_boxes(mask, classes, min_area=min_area, connectivity=connectivity)
    height, width = np.asarray(mask).shape
    return boxes, b2c_captions(boxes, width, height, seed=seed, **caption_kwargs)
