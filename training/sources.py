"""Training sources: image tensors + a caption group per item, built from the config's [[datasets]].

Why a registry: the dataset list is configuration (kinds: 'aid' scene classes with curated captions, 'folder'
any folder-per-class scene set, 'captions' human caption sets such as RSICD, 'detection' box sets through
B2C + counting crops, 'segmentation' masks through M2B), and the loop only needs images, group keys and
captions per group.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training.data.errors import DatasetError

log = logging.getLogger("training")


@dataclass
class Source:
    """One dataset ready to sample: uint8 images [N,3,H,W], group key per item, captions per group.

    Items with the same group key are positives of each other in the contrastive loss. ``classes``: the groups
    are scene classes (AID, folder-per-class sets), so the class-bank loss may score an item against all of them.
    """

    name: str
    weight: float
    images: torch.Tensor
    groups: list[str]
    captions: dict[str, list[str]]
    classes: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


def build_aid(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """AID 'train' part of the fixed split; captions rich (phrases) or plain (class name only).

    Keys of the [[datasets]] entry: root, split (JSON path), part, exclude (file of image names to leave out),
    captions ('rich'/'plain'),
    description_share (fraction of sampled captions that are whole-sentence descriptions),
    templates (list of '{}' strings), cache_size (decode size; default native), weight, name.
    """
    from training.data.aid import aid_subset, load_split
    from training.data.aid_captions import TRAIN_TEMPLATES, check_no_unseen_words, class_captions
    from training.data.image_cache import load_images

    root = (repo_root / spec.get("root", "../shared/data/aid")).resolve()
    split = load_split(repo_root / spec["split"]) if "split" in spec else load_split()
    sub = aid_subset(root, spec.get("part", "train"), split)
    unseen = set(split["unseen_classes"])
    if unseen & set(sub.classes):
        raise DatasetError(f"AID training part contains unseen classes {sorted(unseen & set(sub.classes))}")
    templates = tuple(spec.get("templates", TRAIN_TEMPLATES))
    rich = spec.get("captions", "rich") == "rich"
    share = float(spec.get("description_share", 0.0))
    captions = {f"aid:{c}": class_captions(c, templates, rich=rich, description_share=share) for c in sub.classes}
    if unseen:  # the held-out-classes split: no caption may name a held-out class
        for caps in captions.values():
            check_no_unseen_words(caps)
    exclude = excluded_keys(spec, repo_root)
    keep = [k for k, p in enumerate(sub.paths) if p.name not in exclude]
    paths, labels = [sub.paths[k] for k in keep], [sub.labels[k] for k in keep]
    log.info("aid: %d training images (%d excluded as scenes held out elsewhere)", len(paths), len(sub.paths) - len(paths))
    images = load_images(paths, spec.get("cache_size"), cache_dir)
    groups = [f"aid:{sub.classes[i]}" for i in labels]
    return Source(spec.get("name", "aid"), float(spec.get("weight", 1.0)), images, groups, captions, classes=True)


def data_path(spec: dict, key: str, repo_root: Path, where: str | None = None) -> Path:
    """A data path from the config: '$RSCLIP_DATA/...' expanded (default <repo>/.cache/data), relative to the repo root.
    ``where`` names the config table in the error (default: the dataset's ``[[datasets]]`` entry)."""
    raw = str(spec[key])
    if raw.startswith("$RSCLIP_DATA"):
        base = os.environ.get("RSCLIP_DATA") or str(repo_root / ".cache" / "data")
        raw = base + raw[len("$RSCLIP_DATA"):]
    path = (repo_root / raw).resolve()
    if not path.exists():
        raise DatasetError(f"{where or '[[datasets]] ' + str(spec.get('name'))}: {key} = {spec[key]!r} -> {path} "
                           f"does not exist "
                           f"(fetch the data as training/DATA.md describes, or set RSCLIP_DATA)")
    return path


def build_captions(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """A human caption set (RSICD...): one group per image, its cleaned captions.

    Keys: csv (VT-RSBS sentence-list CSV) or json (Karpathy JSON), images (folder), part (split name,
    default 'train'), cache_size, weight, name.
    """
    from training.data.cleaning import CaptionCleaner
    from training.data.image_cache import load_images
    from training.data.readers import read_karpathy_json, read_sentence_list_csv

    name = spec.get("name", "captions")
    images_root = data_path(spec, "images", repo_root)
    part = spec.get("part", "train")
    if "csv" in spec:
        records = read_sentence_list_csv(data_path(spec, "csv", repo_root), images_root, split=part)
    elif "json" in spec:
        records = read_karpathy_json(data_path(spec, "json", repo_root), images_root, split=part)
    else:
        raise DatasetError(f"[[datasets]] {name}: a captions source needs 'csv' or 'json'")
    cleaner = CaptionCleaner()
    records = sorted(cleaner.clean_records(records), key=lambda r: r.key)
    exclude = excluded_keys(spec, repo_root)
    records = [r for r in records if r.key not in exclude]
    if not records:
        raise DatasetError(f"[[datasets]] {name}: no images with captions in part {part!r}")
    log.info("%s: %d images, cleaning %s, %d excluded (scenes held out elsewhere)", name, len(records),
             cleaner.report.as_dict()["removed"], len(exclude))
    images = load_images([r.image for r in records], spec.get("cache_size"), cache_dir)
    groups = [f"{name}:{r.key}" for r in records]
    captions = {g: list(r.captions) for g, r in zip(groups, records)}
    return Source(name, float(spec.get("weight", 1.0)), images, groups, captions)


def excluded_keys(spec: dict, repo_root: Path) -> set[str]:
    """Keys listed in the spec's `exclude` file (one per line, '#' comments): near-duplicates of test images."""
    return _listed(spec, "exclude", repo_root) or set()


def _listed(spec: dict, key: str, repo_root: Path) -> set[str] | None:
    """The lines of the file the spec names under `key` ('#' comments, blanks skipped); None when not given."""
    if key not in spec:
        return None
    path = data_path(spec, key, repo_root)
    lines = path.read_text(encoding="utf-8").splitlines()
    return {ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()}


def build_detection(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """A detection set through Box-to-Caption: each image with its B2C captions (counts per class), plus
    RemoteCount-style crops with exactly n objects of one class (captions with the number).

    Keys: format ('nwpu-vhr10'), root, part ('train'), cache_size (default 160), counts (true),
    max_count (10), weight, name.
    """
    from training.data.detection_sets import detection_items

    name = spec.get("name", "detection")
    items = detection_items(spec.get("format", "nwpu-vhr10"), data_path(spec, "root", repo_root),
                            spec.get("part", "train"), size=int(spec.get("cache_size", 160)),
                            counts=bool(spec.get("counts", True)), max_count=int(spec.get("max_count", 10)))
    if not items.captions:
        raise DatasetError(f"[[datasets]] {name}: no annotated images in part {spec.get('part', 'train')!r}")
    groups = [f"{name}:{k}" for k in items.keys]
    captions = {f"{name}:{k}": caps for k, caps in items.captions.items()}
    log.info("%s: %d items (%d count crops)", name, len(groups), items.n_count_crops)
    return Source(name, float(spec.get("weight", 1.0)), items.images, groups, captions)


def build_folder(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """A folder-per-class scene set (UCM, RESISC45, PatternNet... layout): one group per class.

    Keys: root, classes (list; default every folder), phrases (JSON {folder: [names and synonyms]}; default
    the humanized folder name), include / exclude (files of 'class/file' lines: a split, or test images held
    out), templates, cache_size, weight, name.
    """
    from training.data.aid_captions import TRAIN_TEMPLATES
    from training.data.image_cache import load_images
    from training.data.scene_folders import class_folder_items, read_phrases

    name = spec.get("name", "folder")
    phrases = read_phrases(repo_root / spec["phrases"]) if "phrases" in spec else None
    items = class_folder_items(data_path(spec, "root", repo_root), tuple(spec.get("templates", TRAIN_TEMPLATES)),
                               phrases, spec.get("classes"), _listed(spec, "include", repo_root),
                               _listed(spec, "exclude", repo_root))
    log.info("%s: %d images in %d classes", name, len(items.paths), len(items.captions))
    return _source(spec, name, items, load_images(items.paths, spec.get("cache_size"), cache_dir), classes=True)


def build_segmentation(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """A segmentation set through Mask-to-Box: images/ + masks/ (class ids), one group per image.

    Keys: images, masks, classes (table {id = "name"}), min_area, cache_size, weight, name.
    """
    from training.data.image_cache import load_images
    from training.data.scene_folders import mask_folder_items

    name = spec.get("name", "segmentation")
    try:
        classes = {int(k): str(v) for k, v in dict(spec["classes"]).items()}
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"[[datasets]] {name}: 'classes' must be a table of class id = name") from None
    items = mask_folder_items(data_path(spec, "images", repo_root), data_path(spec, "masks", repo_root), classes,
                              int(spec.get("min_area", 16)))
    if not items.paths:
        raise DatasetError(f"[[datasets]] {name}: no mask has a component of the listed classes")
    return _source(spec, name, items, load_images(items.paths, spec.get("cache_size"), cache_dir))


def _source(spec: dict, name: str, items, images, classes: bool = False) -> Source:
    groups = [f"{name}:{k}" for k in items.keys]
    captions = {f"{name}:{k}": caps for k, caps in items.captions.items()}
    log.info("%s: %d images, %d caption groups", name, len(groups), len(captions))
    return Source(name, float(spec.get("weight", 1.0)), images, groups, captions, classes)


BUILDERS: dict[str, Callable[[dict, Path, Path | None], Source]] = {
    "aid": build_aid, "captions": build_captions, "detection": build_detection,
    "folder": build_folder, "segmentation": build_segmentation}


def build_sources(specs: list[dict], repo_root: Path, cache_dir: Path | None = None) -> list[Source]:
    """Build every [[datasets]] entry; unknown kinds name the entry."""
    out = []
    for i, spec in enumerate(specs):
        kind = spec.get("kind")
        if kind not in BUILDERS:
            raise DatasetError(f"[[datasets]] #{i} ({spec.get('name')}): unknown kind {kind!r}; known {sorted(BUILDERS)}")
        out.append(BUILDERS[kind](spec, repo_root, cache_dir))
    return out


def capped_sources(specs: list[dict], repo_root: Path, cap: int, seed: int):
    """(source, kept item indices) for each [[datasets]] entry: all items, or a seeded sorted sample of ``cap``.

    Why: the stages that start from a bundle (rotation distillation, text tuning) read the main recipe's sources
    but need not walk 23,000 EuroSAT chips; the sample depends only on the seed and the source's position.
    """
    for i, source in enumerate(build_sources(specs, repo_root)):
        n = len(source)
        keep = np.arange(n) if not cap or n <= cap else np.sort(
            np.random.default_rng([seed, i]).choice(n, cap, replace=False))
        yield source, keep
