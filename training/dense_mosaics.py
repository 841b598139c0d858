"""Scene mosaics for the dense head: canvases of scene-labelled images, each cell labelled by the scene under it.

Why: detection boxes (NWPU VHR-10) teach a cell which *object* it holds; land-cover and scene queries ("farmland",
"forest", "parking lot") need a cell to say which *scene* it lies in, also near a seam where one window holds
several scenes, which a model trained on whole scenes never saw. Canvases of AID *training* images (the aid30
split's 'train' part minus its exclude list; the 'val' images the bench's mosaics are built from are never read)
at a random scene size, cut at a random offset so that seams fall anywhere on the window grid, give that
supervision: a cell is its scene's class when one scene covers at least ``min_cover`` of it, IGNORE otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.dense_labels import IGNORE


@dataclass(frozen=True)
class Canvas:
    """One mosaic in model pixels: ``image`` uint8 [H, W, 3], ``labels`` int8 [H // stride, W // stride]."""

    image: np.ndarray
    labels: np.ndarray
    scene_px: int
    offset: tuple[int, int]


def scene_cell_labels(scene_of_pixel: np.ndarray, stride: int, min_cover: float) -> np.ndarray:
    """int8 [rows, cols]: the scene class covering >= ``min_cover`` of each ``stride``-pixel cell, else IGNORE.

    ``scene_of_pixel``: int [H, W] class per pixel, H and W multiples of ``stride``."""
    if not 0.5 <= min_cover <= 1:
        raise ValueError(f"min_cover must be in [0.5, 1] (one class per cell), got {min_cover}")
    h, w = scene_of_pixel.shape
    if h % stride or w % stride:
        raise ValueError(f"{h} x {w} pixels is not a whole number of {stride}-pixel cells")
    rows, cols = h // stride, w // stride
    cells = scene_of_pixel.reshape(rows, stride, cols, stride).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    out = np.full((rows, cols), IGNORE, np.int8)
    for k in np.unique(scene_of_pixel):
        share = (cells == k).mean(axis=2)
        out[share >= min_cover] = k
    return out


def make_canvas(images: Sequence[np.ndarray], labels: Sequence[int], grid: int, scene_px: int,
                offset: tuple[int, int], stride: int, min_cover: float) -> Canvas:
    """``grid x grid`` scenes (``images[i]`` already ``scene_px`` square, row-major) cut at ``offset`` (row, col)
    to the largest whole number of cells that fits."""
    if len(images) != grid * grid or len(labels) != grid * grid:
        raise ValueError(f"need {grid * grid} images and labels for a {grid} x {grid} canvas, got {len(images)}")
    side = grid * scene_px
    full = np.zeros((side, side, 3), np.uint8)
    scene = np.zeros((side, side), np.int16)
    for i, (img, k) in enumerate(zip(images, labels)):
        if img.shape[:2] != (scene_px, scene_px):
            raise ValueError(f"scene {i} is {img.shape[:2]}, expected {scene_px} x {scene_px}")
        r, c = divmod(i, grid)
        full[r * scene_px:(r + 1) * scene_px, c * scene_px:(c + 1) * scene_px] = img
        scene[r * scene_px:(r + 1) * scene_px, c * scene_px:(c + 1) * scene_px] = k
    oy, ox = offset
    n = (side - max(oy, ox)) // stride
    if n < 1:
        raise ValueError(f"offset {offset} leaves no whole cell on a {side}-pixel canvas")
    crop = (slice(oy, oy + n * stride), slice(ox, ox + n * stride))
    return Canvas(full[crop], scene_cell_labels(scene[crop], stride, min_cover), scene_px, (oy, ox))


def aid_training_pool(aid_root: Path, split_file: Path,
                      exclude_file: Path | None) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image paths, class index per image) of the split's 'train' part minus the exclude list."""
    from training.data.aid import aid_subset, load_split

    sub = aid_subset(Path(aid_root), "train", load_split(Path(split_file)))
    excluded: set[str] = set()
    if exclude_file is not None:
        excluded = {line.split("#")[0].strip() for line in Path(exclude_file).read_text(encoding="utf-8").splitlines()}
        excluded.discard("")
    keep = [i for i, p in enumerate(sub.paths) if p.name not in excluded]
    return list(sub.classes), [sub.paths[i] for i in keep], np.array([sub.labels[i] for i in keep], np.int64)


def random_canvases(paths: Sequence[Path], labels: np.ndarray, count: int, grid: int,
                    scene_px: tuple[int, int], stride: int, min_cover: float, seed: int):
    """Yield ``count`` seeded canvases: each draws ``grid x grid`` classes uniformly, an image of each class from
    ``paths``, one scene size in ``scene_px`` (model px, inclusive) and a random cut offset within one scene."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    by_class = {int(k): np.flatnonzero(labels == k) for k in np.unique(labels)}
    classes = sorted(by_class)
    for _ in range(count):
        s = int(rng.integers(scene_px[0], scene_px[1] + 1))
        ks = [classes[j] for j in rng.integers(0, len(classes), grid * grid)]
        picks = [int(rng.choice(by_class[k])) for k in ks]
        images = []
        for p in picks:
            with Image.open(paths[p]) as im:
                images.append(np.asarray(im.convert("RGB").resize((s, s), Image.BICUBIC)))
        offset = (int(rng.integers(0, s)), int(rng.integers(0, s)))
        yield make_canvas(images, ks, grid, s, offset, stride, min_cover), picks
