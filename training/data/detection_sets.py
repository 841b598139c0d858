"""Detection sets as training items: whole images with Box-to-Caption captions plus counting crops.

Why one module: a detection set on disk (images + box files + split lists) must become uint8 image
tensors with caption groups; the layout of each set is its own, the captioning (B2C, count crops) is shared.
Known layout: 'nwpu-vhr10' (NWPU VHR-10: positive_image_set/NNN.jpg, ground_truth/NNN.txt,
image_set/{train,test}.txt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .b2c import b2c_captions
from .boxes import Box, read_nwpu_vhr10
from .count_crops import count_captions, count_crops
from .errors import DatasetError, MissingImageError

FORMATS = ("nwpu-vhr10",)


@dataclass
class DetectionItems:
    """uint8 images [N,3,S,S], one key per item, captions per key."""

    images: "object"  # torch.Tensor
    keys: list[str]
    captions: dict[str, list[str]]
    n_count_crops: int


def nwpu_vhr10_images(root: Path, part: str) -> list[tuple[str, Path, list[Box]]]:
    """(image id, image path, boxes) of one part ('train'/'test') of NWPU VHR-10's image_set lists."""
    root = Path(root)
    listing = root / "image_set" / f"{part}.txt"
    if not listing.is_file():
        raise DatasetError(f"NWPU VHR-10: split list not found: {listing}")
    out = []
    for image_id in listing.read_text(encoding="utf-8").split():
        image = root / "positive_image_set" / f"{image_id}.jpg"
        if not image.is_file():
            raise MissingImageError(f"NWPU VHR-10: image listed in {listing.name} is missing: {image}")
        out.append((image_id, image, read_nwpu_vhr10(root / "ground_truth" / f"{image_id}.txt")))
    return out


def _square_rgb(im: Image.Image, window, size: int) -> np.ndarray:
    return np.asarray(im.crop(window).resize((size, size), Image.BICUBIC), dtype=np.uint8).transpose(2, 0, 1)


def detection_items(fmt: str, root: Path, part: str, size: int = 160, counts: bool = True,
                    max_count: int = 10) -> DetectionItems:
    """Whole images (B2C captions; non-square images squashed to size, as a tile would be resized) and,
    when `counts`, every counting crop (count_crops) of each image."""
    import torch

    if fmt not in FORMATS:
        raise DatasetError(f"unknown detection set format {fmt!r}; known {FORMATS}")
    arrays, keys, captions, n_crops = [], [], {}, 0
    for image_id, path, boxes in nwpu_vhr10_images(root, part):
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            caps = b2c_captions(boxes, w, h, seed=image_id)
            if caps:
                arrays.append(_square_rgb(im, (0, 0, w, h), size))
                keys.append(image_id)
                captions[image_id] = caps
            if counts:
                for crop in count_crops(boxes, w, h, max_count=max_count, seed=image_id):
                    key = f"{image_id}/{crop.name}/{crop.count}"
                    arrays.append(_square_rgb(im, crop.window, size))
                    keys.append(key)
                    captions[key] = count_captions(crop.name, crop.count)
                    n_crops += 1
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, 3, size, size), dtype=torch.uint8)
    return DetectionItems(images, keys, captions, n_crops)
