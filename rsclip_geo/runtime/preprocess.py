"""Image preprocessing: the one place tiles become encoder input.

Whole image resized to the model's square input (antialiased, the bundle's
interpolation), scaled to [0, 1], normalised with the bundle's mean/std, CHW.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .bundle import ImageSpec

_PIL_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def resize_rgb(image: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 uint8. PIL's resize filters antialias when shrinking."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {image.dtype}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image), mode="RGB")
    return np.asarray(pil.resize((size, size), _PIL_FILTERS[interpolation]))


class Preprocessor:
    """Turns uint8 RGB images into a normalised float32 NCHW batch for one ImageSpec."""

    def __init__(self, spec: ImageSpec):
        self.spec = spec
        # fold /255 and mean/std into one multiply-add
        std = np.asarray(spec.std, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
        self._shift = (-np.asarray(spec.mean, dtype=np.float32) / std).reshape(3, 1, 1)

    def resize(self, image: np.ndarray) -> np.ndarray:
        return resize_rgb(image, self.spec.size, self.spec.interpolation)

    def normalize(self, resized: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """size x size x 3 uint8 -> 3 x size x size float32 (written into ``out`` if given)."""
        return self._scale_chw(resized.transpose(2, 0, 1), out)

    def from_chw(self, chw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """3 x H x W uint8 (a band-first tile) -> 3 x size x size float32; no interleaving copy unless resized."""
        s = self.spec.size
        if chw.shape[1:] != (s, s):
            return self.normalize(self.resize(np.ascontiguousarray(chw.transpose(1, 2, 0))), out=out)
        return self._scale_chw(chw, out)

    def _scale_chw(self, chw: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            out = np.empty(chw.shape, dtype=np.float32)
        np.multiply(chw, self._scale, out=out, casting="unsafe")
        out += self._shift
        return out

    def __call__(self, images) -> np.ndarray:
        images = list(images)
        s = self.spec.size
        batch = np.empty((len(images), 3, s, s), dtype=np.float32)
        for i, image in enumerate(images):
            self.normalize(self.resize(image), out=batch[i])
        return batch
