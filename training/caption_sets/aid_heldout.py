"""aid-heldout: the AID images the default model never trained on, captioned from their class name.

Images: the fixed split's 'val' part of the 24 seen classes (seen.json) and all images of the six unseen
classes (unseen.json). Captions: five per image, HELDOUT_TEMPLATES x the class phrase, so every image of a
class has the same five captions. The templates are none of training's (TRAIN_TEMPLATES, which include the
runtime's DEFAULT_TEMPLATES) and no caption equals a training caption (`training_overlap`); the class
phrase itself is training's plain class name (AID_PHRASES[c][0]) for seen classes -- a class caption has
to name the class -- and a plain name for the unseen ones.

Identical captions bound recall (see ceilings.py): with ~66 images per seen class and up to 420 per unseen
class, R@k can be at most about k / images-per-class both ways. So the builder also writes groups.json:
group g holds the g-th image (seeded order) of every one of the 30 classes, as many groups as the smallest
class allows; within a group no two images share a caption (ceiling 1), and its split field is the group
name ("g00", ...), so one group is `rsclip-geo eval retrieval groups.json --split g00` and
training.caption_sets.grouped averages them all.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Sequence

from training.data.aid import UNSEEN_CLASSES, aid_subset, load_split
from training.data.aid_captions import AID_PHRASES, TRAIN_TEMPLATES, class_captions
from training.data.errors import DatasetError

from .writer import Item

HELDOUT_TEMPLATES: tuple[str, ...] = (
    "This aerial photograph shows {}.",
    "{} seen from high above.",
    "An orthophoto of {}.",
    "Looking straight down at {} from the sky.",
    "Earth observation imagery of {}.",
)
UNSEEN_PHRASES = {"Airport": "an airport", "Beach": "a beach", "Bridge": "a bridge", "Desert": "a desert",
                  "Pond": "a pond", "Stadium": "a stadium"}
PARTS = (("seen", "val"), ("unseen", "unseen"))  # (caption file stem, part of the fixed split)


def class_phrase(name: str) -> str:
    if name in UNSEEN_PHRASES:
        return UNSEEN_PHRASES[name]
    if name in AID_PHRASES:
        return AID_PHRASES[name][0]
    raise DatasetError(f"no class phrase for AID class {name!r}")


def heldout_captions(name: str, templates: Sequence[str] = HELDOUT_TEMPLATES) -> tuple[str, ...]:
    """The five captions of every image of class `name` (first letter capitalised)."""
    out = []
    for t in templates:
        text = t.format(class_phrase(name))
        out.append(text[:1].upper() + text[1:])
    return tuple(out)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().rstrip("."))


SEEN_CLASSES = tuple(c for c in AID_PHRASES if c not in UNSEEN_CLASSES)  # the v1 (held-out-classes) model's 24


def training_captions() -> set[str]:
    """Every caption the held-out-classes model's training could sample (templates x the 24 seen classes'
    phrases, plus the descriptions), normalised."""
    return {_norm(c) for name in SEEN_CLASSES
            for c in class_captions(name, TRAIN_TEMPLATES, rich=True, description_share=0.5)}


def training_overlap(captions: Sequence[str]) -> list[str]:
    """Captions that equal a training caption or a training template filled with anything (case/period aside)."""
    train = training_captions()
    patterns = [re.compile("^" + re.escape(_norm(t)).replace(re.escape("{}"), ".+") + "$") for t in TRAIN_TEMPLATES
                if re.search(r"[a-z]", t.replace("{}", ""))]  # the bare '{}.' template is covered by `train`
    return [c for c in captions if _norm(c) in train or any(p.match(_norm(c)) for p in patterns)]


def group_order(files: Sequence[str], name: str, seed: int | str) -> dict[str, int]:
    """File name -> group index: the class's files in a seeded order (independent of listing order)."""
    order = sorted(files)
    random.Random(f"aid-heldout:{seed}:{name}").shuffle(order)
    return {f: g for g, f in enumerate(order)}


def build(data_dir: Path, out: Path, seed: int | str = 0, classes: Sequence[str] | None = None,
          split: dict | None = None) -> tuple[dict[str, list[Item]], dict]:
    """Copy the held-out images under out/images/<Class>/ and return ({caption file: items}, info)."""
    aid = Path(data_dir) / "aid"
    split = split or load_split()
    wanted = set(classes) if classes else None
    if wanted is not None:
        known = set(split["val"]) | set(split["unseen"])
        if wanted - known:
            raise DatasetError(f"AID classes not in the held-out split: {sorted(wanted - known)}")
    files: dict[str, list[Item]] = {}
    per_class: dict[str, dict] = {}
    by_group: dict[int, list[Item]] = {}
    for stem, part in PARTS:
        sub = aid_subset(aid, part, split)
        items = []
        for path, label in zip(sub.paths, sub.labels):
            name = sub.classes[label]
            if wanted is not None and name not in wanted:
                continue
            if name not in per_class:
                groups = group_order(split[part][name], name, seed)
                per_class[name] = {"part": stem, "images": 0, "groups": groups, "captions": heldout_captions(name)}
            info = per_class[name]
            info["images"] += 1
            (out / "images" / name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / "images" / name / path.name)
            group = info["groups"][path.name]
            item = Item(f"images/{name}", path.name, info["captions"],
                        extra={"class": name, "part": stem, "group": group})
            items.append(item)
            by_group.setdefault(group, []).append(item)
        if items:
            files[f"{stem}.json"] = items
    if not files:
        raise DatasetError("no held-out AID images selected")
    n_groups = min(c["images"] for c in per_class.values())
    files["groups.json"] = [Item(it.filepath, it.filename, it.captions, split=f"g{g:02d}", extra=it.extra)
                            for g in range(n_groups)
                            for it in sorted(by_group[g], key=lambda it: it.extra["class"])]
    all_caps = sorted({c for info in per_class.values() for c in info["captions"]})
    info = {"seed": seed, "templates": list(HELDOUT_TEMPLATES),
            "classes": {n: {"part": c["part"], "images": c["images"], "phrase": class_phrase(n)}
                        for n, c in sorted(per_class.items())},
            "unseen_classes": [c for c in UNSEEN_CLASSES if c in per_class],
            "groups": {"n": n_groups, "images_per_group": len(per_class),
                       "rule": "group g = the g-th image of every class in a seeded order "
                               "(random.Random('aid-heldout:<seed>:<class>') over sorted file names)"},
            "training_overlap": {"exact_or_template_matches": training_overlap(all_caps),
                                 "note": "class phrases of seen classes are training's plain class names"}}
    return files, info
