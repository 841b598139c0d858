"""Batch augmentations for overhead imagery on uint8 tensors: dihedral (90-degree rotations + flips),
random resized crop and mild colour jitter, then normalisation.

Why: overhead scenes have no canonical "up", so all 8 dihedral transforms are label-preserving;
crops mimic tiles cut at arbitrary offsets and scales; colour jitter stays mild because colour
(water, vegetation, sand) is itself evidence of the class.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


@dataclass(frozen=True)
class AugmentConfig:
    scale_min: float = 0.5        # random resized crop: min area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotate90: bool = True
    flip: bool = True
    brightness: float = 0.1       # multiplicative, +-
    contrast: float = 0.1
    saturation: float = 0.1


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0,255] float NCHW -> (x/255 - mean)/std as float32."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NCHW -> float NCHW in [0,255], antialiased bicubic (close to PIL's)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.float()
    return F.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True,
                         align_corners=False).clamp_(0, 255)


def _crop_box(h: int, w: int, cfg: AugmentConfig, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop's box sampling (area fraction, log-uniform aspect ratio)."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(cfg.scale_min, 1.0)
        r = math.exp(rng.uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
        cw, ch = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    return 0, 0, h, w


def augment_batch(x: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """uint8 NCHW -> augmented float NCHW in [0,255] at size x size (seeded by g).

    Crops are resized on uint8 with torchvision's bicubic antialiased kernel (fast on CPU).
    """
    n, _, h, w = x.shape
    rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=g)))
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    for i in range(n):
        top, left, ch, cw = _crop_box(h, w, cfg, rng)
        img = TF.resized_crop(x[i], top, left, ch, cw, [size, size],
                              interpolation=InterpolationMode.BICUBIC, antialias=True)
        if cfg.rotate90:
            img = torch.rot90(img, rng.randrange(4), dims=(1, 2))
        if cfg.flip and rng.random() < 0.5:
            img = img.flip(2)
        out[i] = img
    out = out.float()

    def factors(amount: float) -> torch.Tensor:
        return (1 + amount * (2 * torch.rand(n, generator=g) - 1)).view(n, 1, 1, 1)

    if cfg.brightness:
        out *= factors(cfg.brightness)
    if cfg.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + factors(cfg.contrast) * (out - mean)
    if cfg.saturation:
        gray = (0.299 * out[:, 0:1] + 0.587 * out[:, 1:2] + 0.114 * out[:, 2:3])
        out = gray + factors(cfg.saturation) * (out - gray)
    return out.clamp_(0, 255)
