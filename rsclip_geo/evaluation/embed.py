"""Image files -> normalised embeddings through the same runtime and preprocessing as tiles.

Files are decoded one batch ahead in a worker thread (PIL, GDAL and
onnxruntime release the GIL), then ``model.encode_images`` resizes and
normalises them with the bundle's ``ImageSpec`` exactly as for tiles.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .datasets import load_rgb

ProgressCallback = Callable[[int, int], None]  # (images done, images total)


def _decode(items: Sequence) -> list[np.ndarray]:
    return [item if isinstance(item, np.ndarray) else load_rgb(item) for item in items]


def embed_images(model, images: Sequence[str | Path | np.ndarray], progress: ProgressCallback | None = None,
                 batch_size: int | None = None) -> np.ndarray:
    """Paths or uint8 HxWx3 arrays -> float32 [N, D] L2-normalised embeddings, in input order."""
    images = list(images)
    n = len(images)
    bs = int(batch_size or model.batch_size)
    chunks = [images[i:i + bs] for i in range(0, n, bs)]
    out: list[np.ndarray] = []
    done = 0
    if progress:
        progress(0, n)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_decode, chunks[0]) if chunks else None
        for i in range(len(chunks)):
            pixels = pending.result()
            pending = pool.submit(_decode, chunks[i + 1]) if i + 1 < len(chunks) else None
            out.append(model.encode_images(pixels))
            done += len(pixels)
            if progress:
                progress(done, n)
    if not out:
        return np.zeros((0, model.embed_dim), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)
