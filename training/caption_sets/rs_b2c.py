"""rs-b2c: chips of the annotated shared imagery, five Box-to-Caption captions each (RemoteCLIP's B2C).

Sources: the two DOTA images (oriented boxes, ~0.26 m) and the SpaceNet panchromatic chip (0.5 m), whose
building mask becomes boxes by Mask-to-Box. Every image is cut into chips by b2c.chip_captions (full-size
chips, the last row/column moved back inside the image); a chip owns the boxes whose centre lies in it and
gets five captions from them. Chips owning no object are left out.

Chip size 256 px (CHIP_SIZE): the model sees 128 px, so a 256 px chip is shrunk 2x and a small vehicle
(~20 px long in DOTA) keeps ~10 px, a ship (~38 px) ~19 px, a SpaceNet building (~46 px) ~23 px; 512 px
chips would shrink them 4x, cars to ~5 px. 256 px is 66 m of ground in DOTA and 128 m in SpaceNet, inside
the 60-600 m the model card recommends, and it gives 48 chips with objects (512 px gives 17, too few for
recall at 10 to mean much).

SpaceNet pixels are uint16 single band; they are stretched once for the whole scene exactly as tiles are
(rsclip_geo.evaluation.datasets.load_rgb -> Scene: 2-98 % stretch, band replicated to RGB), then chipped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.data.b2c import chip_captions
from training.data.boxes import Box, read_dota
from training.data.errors import DatasetError
from training.data.m2b import mask_to_boxes

from .writer import Item

CHIP_SIZE = 256
DOTA_IMAGES = ("P0706", "P1888")
SPACENET = "spacenet"
SPACENET_SCENE = "scenes/spacenet_pan_050m.tif"
SPACENET_MASK = "scenes/spacenet_pan_050m_building_mask.tif"
SPACENET_CLASSES = {255: "building"}
SOURCES = (*DOTA_IMAGES, SPACENET)


@dataclass(frozen=True)
class AnnotatedImage:
    """One source image: HxWx3 uint8 RGB and pixel boxes."""

    key: str
    source: str
    rgb: np.ndarray
    boxes: tuple[Box, ...]
    gsd: float | None


def read_dota_image(dota_dir: Path, name: str) -> AnnotatedImage:
    from PIL import Image

    label_file = Path(dota_dir) / "labelTxt" / f"{name}.txt"
    image_file = Path(dota_dir) / "images" / f"{name}.png"
    if not image_file.is_file():
        raise DatasetError(f"DOTA image not found: {image_file}")
    labels = read_dota(label_file)
    with Image.open(image_file) as im:
        rgb = np.asarray(im.convert("RGB"))
    return AnnotatedImage(name, "DOTA", rgb, labels.boxes, labels.gsd)


def read_spacenet(data_dir: Path) -> AnnotatedImage:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from rsclip_geo.evaluation.datasets import load_rgb

    scene, mask_file = Path(data_dir) / SPACENET_SCENE, Path(data_dir) / SPACENET_MASK
    rgb = load_rgb(scene)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the mask has the scene's grid, no transform
        with rasterio.open(mask_file) as src:
            mask = src.read(1)
    with rasterio.open(scene) as src:
        gsd = abs(src.transform.a)
    if mask.shape != rgb.shape[:2]:
        raise DatasetError(f"{mask_file}: mask {mask.shape} is not on the scene's {rgb.shape[:2]} grid")
    return AnnotatedImage(SPACENET, "SpaceNet", rgb, tuple(mask_to_boxes(mask, SPACENET_CLASSES)), gsd)


def read_sources(data_dir: Path, keys: Sequence[str] = SOURCES) -> list[AnnotatedImage]:
    unknown = [k for k in keys if k not in SOURCES]
    if unknown:
        raise DatasetError(f"unknown rs-b2c source(s) {unknown}; known {list(SOURCES)}")
    return [read_spacenet(data_dir) if k == SPACENET else read_dota_image(Path(data_dir) / "dota", k) for k in keys]


def chip_items(image: AnnotatedImage, chip_size: int = CHIP_SIZE, seed: int | str = 0) -> list[tuple[Item, np.ndarray]]:
    """(caption-set item, chip pixels) for every chip of `image` that owns at least one object."""
    height, width = image.rgb.shape[:2]
    out = []
    for chip in chip_captions(image.boxes, width, height, chip_size, seed=f"{seed}:{image.key}"):
        x0, y0, x1, y1 = chip.window
        extra = {"source": image.source, "image": image.key, "window": list(chip.window), "counts": chip.counts,
                 "gsd": image.gsd}
        item = Item("images", f"{image.key}_x{x0:04d}_y{y0:04d}.png", tuple(chip.captions), extra=extra)
        out.append((item, image.rgb[y0:y1, x0:x1]))
    return out


def build(data_dir: Path, out: Path, chip_size: int = CHIP_SIZE, seed: int | str = 0,
          keys: Sequence[str] = SOURCES) -> tuple[dict[str, list[Item]], dict]:
    """Write the chips under out/images; returns ({caption file name: items}, info)."""
    from PIL import Image

    (out / "images").mkdir(exist_ok=True)
    items, per_source = [], {}
    for image in read_sources(data_dir, keys):
        chips = chip_items(image, chip_size, seed)
        for item, pixels in chips:
            Image.fromarray(pixels).save(out / item.filepath / item.filename)
            items.append(item)
        height, width = image.rgb.shape[:2]
        per_source[image.key] = {"source": image.source, "size": [width, height], "gsd": image.gsd,
                                 "objects": len(image.boxes), "chips_with_objects": len(chips)}
    info = {"chip_size": chip_size, "seed": seed, "captions_per_chip": 5, "sources": per_source,
            "rule": "b2c.chip_captions: full-size chips, stride = chip size, last row/column flush with the edge; "
                    "a chip owns the boxes whose centre is inside it; chips without objects left out",
            "spacenet_boxes": "Mask-to-Box (m2b.mask_to_boxes, 8-connectivity, min area 16 px) on the building mask"}
    return {"captions.json": items}, info
