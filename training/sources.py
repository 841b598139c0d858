"""Training sources: image tensors + a caption group per item, built from the config's [[datasets]].

Why a registry: the dataset list is configuration (AID today; DOTA B2C chips etc. later register a
builder under their `kind`), and the loop only needs images, group keys and captions per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from training.data.errors import DatasetError


@dataclass
class Source:
    """One dataset ready to sample: uint8 images [N,3,H,W], group key per item, captions per group.

    Items with the same group key are positives of each other in the contrastive loss.
    """

    name: str
    weight: float
    images: torch.Tensor
    groups: list[str]
    captions: dict[str, list[str]]

    def __len__(self) -> int:
        return self.images.shape[0]


def build_aid(spec: dict, repo_root: Path, cache_dir: Path | None) -> Source:
    """AID 'train' part of the fixed split; captions rich (phrases) or plain (class name only).

    Keys of the [[datasets]] entry: root, split (JSON path), part, captions ('rich'/'plain'),
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
    for caps in captions.values():
        check_no_unseen_words(caps)
    images = load_images(sub.paths, spec.get("cache_size"), cache_dir)
    groups = [f"aid:{sub.classes[i]}" for i in sub.labels]
    return Source(spec.get("name", "aid"), float(spec.get("weight", 1.0)), images, groups, captions)


BUILDERS: dict[str, Callable[[dict, Path, Path | None], Source]] = {"aid": build_aid}


def build_sources(specs: list[dict], repo_root: Path, cache_dir: Path | None = None) -> list[Source]:
    """Build every [[datasets]] entry; unknown kinds name the entry."""
    out = []
    for i, spec in enumerate(specs):
        kind = spec.get("kind")
        if kind not in BUILDERS:
            raise DatasetError(f"[[datasets]] #{i} ({spec.get('name')}): unknown kind {kind!r}; known {sorted(BUILDERS)}")
        out.append(BUILDERS[kind](spec, repo_root, cache_dir))
    return out
