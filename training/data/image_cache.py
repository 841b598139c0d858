"""Decode images once into an in-memory uint8 tensor [N, 3, S, S] (optionally memoised on disk).

Why: on a 2-core CPU, JPEG decoding every epoch costs as much as a small network's forward pass;
AID at 150 px is ~0.7 GB as uint8, so decoding once and augmenting tensors is much cheaper.
Resizing uses PIL bicubic, the same filter the runtime (rsclip_geo.runtime.preprocess) uses.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


def decode_rgb(path: Path, size: int | None) -> np.ndarray:
    """One image as HxWx3 uint8, resized to size x size (PIL bicubic) when size is given."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


def _cache_key(paths: Sequence[Path], size: int | None) -> str:
    h = hashlib.sha1(str(size).encode())
    for p in paths:
        h.update(str(p).encode())
    return h.hexdigest()[:16]


def load_images(paths: Sequence[Path], size: int | None = None, cache_dir: Path | None = None):
    """uint8 torch tensor [N, 3, S, S] of the images; S = size or the common native size."""
    import torch

    paths = [Path(p) for p in paths]
    cache_file = Path(cache_dir) / f"images_{_cache_key(paths, size)}.npy" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        arr = np.load(cache_file)
        if arr.shape[0] == len(paths):
            return torch.from_numpy(arr)
    first = decode_rgb(paths[0], size)
    arr = np.empty((len(paths), 3, first.shape[0], first.shape[1]), dtype=np.uint8)
    for i, p in enumerate(paths):
        img = first if i == 0 else decode_rgb(p, size)
        if img.shape != first.shape:  # mixed native sizes: resize to the first image's size
            img = decode_rgb(p, first.shape[0])
        arr[i] = img.transpose(2, 0, 1)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(cache_file)
    log.info("decoded %d images to %s", len(paths), tuple(arr.shape))
    return torch.from_numpy(arr)
