"""Generic annotated image folders as training items: folder-per-class scene sets and segmentation masks.

Why: most RS sets come in one of two shapes. A scene-classification set (`root/<class>/*.jpg`: UCM, RESISC45,
PatternNet...) gives class-name captions (templates x the class's names and synonyms); a segmentation set
(`images/NAME.ext` + `masks/NAME.png` with class ids) gives Mask-to-Box captions (RemoteCLIP's M2B).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError
from .m2b import mask_captions
from .names import humanize

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")


@dataclass
class FolderItems:
    """Image paths, one group key per image, captions per group."""

    paths: list[Path]
    keys: list[str]
    captions: dict[str, list[str]]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_phrases(path: Path | None) -> dict[str, list[str]]:
    """Optional JSON {folder name: [phrase, ...]}: names and synonyms that go into the templates."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read class phrases JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                                             for v in data.values()):
        raise DatasetError(f"{path}: expected {{class folder: [phrase, ...]}}")
    return data


def class_folder_items(root: Path, templates: tuple[str, ...], phrases: dict[str, list[str]] | None = None,
                       classes: list[str] | None = None, include: set[str] | None = None,
                       exclude: set[str] | None = None) -> FolderItems:
    """root/<class>/*: one group per class; captions = templates x (phrases[class] or the humanized folder name).

    include / exclude: 'class/file' paths (a set's published split, or its test part held out); a class left
    with no image is an error naming it, so a wrong split file cannot silently empty the source.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"scene folder set not found: {root}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes or found
    missing = [c for c in classes if c not in found]
    if missing:
        raise DatasetError(f"{root}: class folders {missing} not found (have {found})")
    phrases = phrases or {}
    paths, keys, captions, seen = [], [], {}, set()
    for c in classes:
        every = _images(root / c)
        if not every:
            raise DatasetError(f"{root / c}: no images ({', '.join(IMAGE_EXTS)})")
        seen.update(f"{c}/{f.name}" for f in every)
        files = [f for f in every if (include is None or f"{c}/{f.name}" in include)
                 and (exclude is None or f"{c}/{f.name}" not in exclude)]
        if not files:
            raise DatasetError(f"{root / c}: every image is left out by the include/exclude lists")
        names = phrases.get(c) or [humanize(c)]
        captions[c] = [t.format(n) for n in names for t in templates]
        paths += files
        keys += [c] * len(files)
    for label, listed in (("include", include), ("exclude", exclude)):
        unknown = sorted((listed or set()) - seen)
        if unknown:  # a split written for another copy of the set: it would silently keep or drop the wrong images
            raise DatasetError(f"{root}: {len(unknown)} {label} entries name no image here, e.g. {unknown[:3]} "
                               f"(entries are 'class folder/file name' as in this copy)")
    return FolderItems(paths, keys, captions)


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim != 2:
        raise DatasetError(f"{path}: a mask must be one band of class ids, got shape {a.shape}")
    return a


def mask_folder_items(images: Path, masks: Path, classes: dict[int, str], min_area: int = 16) -> FolderItems:
    """images/NAME.* + masks/NAME.(png|tif): one group per image with its M2B captions; images whose mask has
    no component of a listed class are left out. A missing mask is an error naming the image."""
    images, masks = Path(images), Path(masks)
    for folder in (images, masks):
        if not folder.is_dir():
            raise DatasetError(f"segmentation set folder not found: {folder}")
    paths, keys, captions = [], [], {}
    for img in _images(images):
        mask = next((masks / (img.stem + e) for e in MASK_EXTS if (masks / (img.stem + e)).is_file()), None)
        if mask is None:
            raise DatasetError(f"{img}: no mask {img.stem}.png/.tif in {masks}")
        _, caps = mask_captions(_read_mask(mask), classes, seed=img.stem, min_area=min_area)
        if caps:
            paths.append(img)
            keys.append(img.stem)
            captions[img.stem] = caps
    return FolderItems(paths, keys, captions)
