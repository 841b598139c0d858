"""Evaluation inputs: image files, folder-per-class sets, caption files and count lists.

Every image is decoded to uint8 RGB here (PIL for jpg/png, rasterio for GeoTIFF
through :class:`rsclip_geo.raster.scene.Scene`, so a GeoTIFF gets the same band choice
and stretch as in tile-classify); resizing and normalisation happen later in
``model.preprocess``. Kept self-contained: the core never imports ``training/``.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import DatasetError, LabelError, OptionError, RasterInputError
from ..runtime.prompts import humanize_class_name, read_json_object

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_RASTERIO_SUFFIXES = (".tif", ".tiff")


# ---- one image ---------------------------------------------------------------
def _stretch_to_uint8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth or float pixels -> uint8 with a 2-98 % stretch (as Scene does for non-8-bit rasters)."""
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (np.percentile(finite, (2, 98)) if finite.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    return np.clip((np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _load_pil(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                gray = _stretch_to_uint8(np.asarray(im))
                return np.repeat(gray[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RasterInputError(f"{path}: cannot read image ({exc})") from exc


def _load_raster(path: Path) -> np.ndarray:
    from rasterio.windows import Window

    from ..raster.scene import NotGeoreferencedSceneWarning, Scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedSceneWarning)
        with Scene(path, zero_invalid=False) as scene:
            rgb, _ = scene.read_rgb(Window(0, 0, scene.width, scene.height))
    return rgb


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode one image file to HxWx3 uint8 RGB (1 band is replicated); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise RasterInputError(f"{path}: image file does not exist")
    if path.suffix.lower() in _RASTERIO_SUFFIXES:
        try:
            return _load_raster(path)
        except RasterInputError:
            raise
        except Exception as exc:  # rasterio/GDAL raise many types; name the file whatever it was
            raise RasterInputError(f"{path}: cannot read image ({exc})") from exc
    return _load_pil(path)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


# ---- folder per class ------------------------------------------------------------
@dataclass
class ImageFolderDataset:
    """Images in ``root/<class>/...``: ``classes`` are folder names (sorted), ``labels[i]`` indexes them."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray

    @classmethod
    def from_folder(cls, root: str | Path, limit_per_class: int | None = None, seed: int = 0) -> "ImageFolderDataset":
        """Scan ``root``; ``limit_per_class`` keeps a seeded random sample of that many images per class."""
        root = Path(root)
        if not root.exists():
            raise DatasetError(f"{root}: dataset folder does not exist")
        if not root.is_dir():
            raise DatasetError(f"{root}: not a folder; expected one sub-folder of images per class")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DatasetError(f"{root}: no class folders found; expected one sub-folder of images per class "
                               f"(e.g. {root}/forest/*.jpg)")
        if limit_per_class is not None and limit_per_class < 1:
            raise OptionError(f"limit_per_class must be >= 1, got {limit_per_class}")
        rng = np.random.default_rng(seed)
        paths: list[Path] = []
        labels: list[int] = []
        for i, name in enumerate(classes):
            files = _image_files(root / name)
            if not files:
                raise DatasetError(f"{root / name}: class folder has no images "
                                   f"(looked for {', '.join(IMAGE_SUFFIXES)})")
            if limit_per_class is not None and len(files) > limit_per_class:
                keep = np.sort(rng.choice(len(files), size=limit_per_class, replace=False))
                files = [files[j] for j in keep]
            paths.extend(files)
            labels.extend([i] * len(files))
        return cls(root=root, classes=classes, paths=paths, labels=np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageFolderDataset":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFolderDataset(self.root, list(self.classes), [self.paths[i] for i in idx], self.labels[idx])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def as_folder_dataset(dataset, limit_per_class: int | None = None, seed: int = 0) -> ImageFolderDataset:
    if isinstance(dataset, ImageFolderDataset):
        return dataset
    return ImageFolderDataset.from_folder(dataset, limit_per_class=limit_per_class, seed=seed)


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, rest) with ``fraction`` of every class in the first part, at least one in each when possible."""
    if not 0 < fraction < 1:
        raise OptionError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    rng = np.random.default_rng(seed)
    first, rest = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        first.extend(idx[:n])
        rest.extend(idx[n:])
    return np.sort(np.asarray(first, np.int64)), np.sort(np.asarray(rest, np.int64))


def read_classnames(path: str | Path, classes: Sequence[str]) -> list[str]:
    """A JSON object ``{folder: class name}``; every folder in ``classes`` must be present."""
    path = Path(path)
    data = read_json_object(path, "class-names file", '{"DenseResidential": "dense residential area"}')
    return classnames_for(classes, data, where=str(path))


def classnames_for(classes: Sequence[str], mapping: Mapping[str, str] | Sequence[str] | None,
                   where: str = "classnames") -> list[str]:
    """Prompt names for folder names: mapping, aligned list, or None (humanized folder names, without a sort
    number that every folder starts with: '01_water', '02_forest' -> 'water', 'forest')."""
    if mapping is None:
        return _without_shared_sort_number([humanize_class_name(c) for c in classes])
    if isinstance(mapping, Mapping):
        missing = [c for c in classes if c not in mapping]
        if missing:
            raise LabelError(f"{where}: no class name for folder(s) {', '.join(map(repr, missing))}")
        bad = [c for c in classes if not isinstance(mapping[c], str) or not mapping[c].strip()]
        if bad:
            raise LabelError(f"{where}: class name for folder {bad[0]!r} must be a non-empty string")
        return [mapping[c].strip() for c in classes]
    names = [str(n) for n in mapping]
    if len(names) != len(classes):
        raise LabelError(f"{where}: {len(names)} class names given for {len(classes)} class folders")
    return names


_SORT_NUMBER = re.compile(r"^\d+ (\S.*)$")


def _without_shared_sort_number(names: list[str]) -> list[str]:
    """Why: a number that only orders the folders is not part of what the scene is, and in a prompt it is noise;
    it is dropped only when every folder has one and the names stay distinct ('12class' or a lone '3 towers' stay)."""
    bare = [m.group(1) if (m := _SORT_NUMBER.match(n)) else None for n in names]
    if len(names) < 2 or None in bare or len(set(bare)) != len(bare):
        return names
    return bare


# ---- captions (retrieval) ------------------------------------------------------
@dataclass
class CaptionSet:
    """Images and their captions: ``caption_image[j]`` is the index of the image caption ``j`` describes."""

    image_paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray
    source: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, image_paths: Sequence, captions: Sequence[str | Sequence[str]], source: str = "") -> "CaptionSet":
        """``captions[i]`` is one caption or a list of captions of image ``i``."""
        if len(image_paths) != len(captions):
            raise DatasetError(f"{source or 'captions'}: {len(image_paths)} images but {len(captions)} caption entries")
        flat, owner = [], []
        for i, cap in enumerate(captions):
            for text in ([cap] if isinstance(cap, str) else list(cap)):
                flat.append(str(text))
                owner.append(i)
        return cls(list(image_paths), flat, np.asarray(owner, dtype=np.int64), source)

    def captions_of(self, i: int) -> list[str]:
        return [self.captions[j] for j in np.flatnonzero(self.caption_image == i)]


def _karpathy(path: Path, root: Path, split: str | None) -> tuple[list[Path], list[list[str]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        images = data["images"]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    except (KeyError, TypeError):
        raise DatasetError(f"{path}: expected a Karpathy-style object {{\"images\": [...]}}") from None
    paths, caps = [], []
    for i, item in enumerate(images):
        if not isinstance(item, dict) or "filename" not in item:
            raise DatasetError(f"{path}: images[{i}] has no 'filename'")
        if split not in (None, "all") and item.get("split") != split:
            continue
        texts = []
        for s in item.get("sentences", []):
            text = s.get("raw") if isinstance(s, dict) else s
            if isinstance(text, str) and text.strip():
                texts.append(text.strip())
        if not texts:
            continue
        image = root / item.get("filepath", "") / item["filename"]
        if not image.is_file() and item.get("filepath"):
            image = root / item["filename"]
        paths.append(image)
        caps.append(texts)
    return paths, caps


def _csv(path: Path, root: Path) -> tuple[list[Path], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from exc
    if rows and rows[0][0].strip().lower() in ("path", "filepath", "filename", "image", "image_path", "file"):
        rows = rows[1:]
    order: dict[Path, list[str]] = {}
    for lineno, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"{path}: row {lineno} {row!r}: expected path,caption")
        order.setdefault(root / row[0].strip(), []).append(row[1].strip())
    return list(order), list(order.values())


def read_captions(path: str | Path, images_root: str | Path | None = None, split: str | None = "test") -> CaptionSet:
    """Karpathy-style JSON (RSICD/RSITMD/UCM; ``split`` filters, None/'all' keeps all) or a path,caption CSV.

    Image paths are relative to ``images_root`` (default: the caption file's folder); several captions
    of one image (several CSV rows, or several sentences) stay grouped under that image.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: caption file does not exist")
    root = Path(images_root) if images_root is not None else path.parent
    if not root.is_dir():
        raise DatasetError(f"{root}: images root folder does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        paths, caps = _karpathy(path, root, split)
    elif suffix in (".csv", ".tsv", ".txt"):
        paths, caps = _csv(path, root)
    else:
        raise DatasetError(f"{path}: unknown caption file type {suffix!r}; use a Karpathy .json or a path,caption .csv")
    if not paths:
        raise DatasetError(f"{path}: no captioned images" + (f" in split {split!r}" if suffix == ".json" and split
                                                              not in (None, "all") else ""))
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} image(s) not found under {root}, e.g. {missing[0]}")
    return CaptionSet.from_pairs(paths, caps, source=str(path))


# ---- counts (RemoteCount-style) -----------------------------------------------------
@dataclass
class CountSet:
    """Images with a known number of one kind of object each."""

    image_paths: list[Path]
    objects: list[str]
    counts: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.image_paths)


def read_counts(path: str | Path) -> CountSet:
    """CSV ``image_path,object_name,count`` (header optional; paths relative to the CSV's folder).

    ``path`` may also be a folder holding ``counts.csv``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "counts.csv"
    if not path.is_file():
        raise DatasetError(f"{path}: count list does not exist (expected a CSV image_path,object_name,count)")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read CSV ({exc})") from exc
    start = 1 if rows and rows[0][-1].strip().lower() in ("count", "counts", "n", "number") else 0
    paths, objects, counts = [], [], []
    for lineno, row in enumerate(rows[start:], start + 1):
        if len(row) != 3:
            raise DatasetError(f"{path}: line {lineno} {row!r}: expected image_path,object_name,count")
        try:
            n = int(row[2].strip())
        except ValueError:
            raise DatasetError(f"{path}: line {lineno}: count {row[2]!r} is not an integer") from None
        if n < 0 or not row[1].strip():
            raise DatasetError(f"{path}: line {lineno}: need a non-empty object name and a count >= 0")
        image = path.parent / row[0].strip()
        if not image.is_file():
            raise DatasetError(f"{path}: line {lineno}: image file not found: {image}")
        paths.append(image)
        objects.append(row[1].strip())
        counts.append(n)
    if not paths:
        raise DatasetError(f"{path}: no rows")
    return CountSet(paths, objects, np.asarray(counts, dtype=np.int64), source=str(path))
