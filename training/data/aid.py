"""AID folder-per-class reader with the project's FIXED split (committed as training/splits/aid_split.json).

Why fixed: zero-shot numbers are only comparable across models if the six unseen classes and the
20% held-out images never change. The split lists file names, so it does not depend on directory order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from training.data.errors import DatasetError

UNSEEN_CLASSES = ("Airport", "Beach", "Bridge", "Desert", "Pond", "Stadium")
HOLDOUT_FRACTION = 0.2
SPLIT_SEED = 20170101
SPLIT_FILE = Path(__file__).resolve().parents[1] / "splits" / "aid_split.json"  # v1: six classes held out
SPLIT30_FILE = SPLIT_FILE.with_name("aid30_split.json")  # v2: all 30 classes, same 20% held-out rule
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif")


def list_classes(root: Path) -> dict[str, list[str]]:
    """Class folder -> sorted image file names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"AID folder not found: {root}")
    classes = {d.name: sorted(f.name for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(root.iterdir()) if d.is_dir()}
    if not classes:
        raise DatasetError(f"no class folders under {root}")
    return classes


def make_split(root: Path, seed: int = SPLIT_SEED, holdout: float = HOLDOUT_FRACTION,
               unseen: tuple[str, ...] = UNSEEN_CLASSES) -> dict:
    """Deterministic split: unseen classes entirely in 'unseen'; round(holdout*n) images per seen class in 'val'."""
    classes = list_classes(root)
    unseen = tuple(unseen)
    missing = [c for c in unseen if c not in classes]
    if missing:
        raise DatasetError(f"unseen classes {missing} not found under {root}")
    split = {"dataset": "AID", "seed": seed, "holdout_fraction": holdout, "unseen_classes": list(unseen),
             "train": {}, "val": {}, "unseen": {}}
    for name, files in classes.items():
        if name in unseen:
            split["unseen"][name] = files
            continue
        order = list(files)
        random.Random(f"{seed}:{name}").shuffle(order)
        n_val = round(holdout * len(order))
        split["val"][name] = sorted(order[:n_val])
        split["train"][name] = sorted(order[n_val:])
    return split


def load_split(path: Path = SPLIT_FILE) -> dict:
    """The committed split file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"AID split file missing: {path} (python -m training.data.aid --write)") from exc


@dataclass(frozen=True)
class AIDSubset:
    """Image paths and class labels of one part of the split ('train', 'val' or 'unseen')."""

    root: Path
    part: str
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)


def aid_subset(root: Path, part: str, split: dict | None = None) -> AIDSubset:
    """Resolve one part of the split against an AID folder; missing files are an error naming the file."""
    split = split or load_split()
    if part not in ("train", "val", "unseen"):
        raise DatasetError(f"AID split part must be train/val/unseen, got {part!r}")
    root = Path(root)
    classes = tuple(sorted(split[part]))
    paths, labels = [], []
    for idx, name in enumerate(classes):
        for fname in split[part][name]:
            p = root / name / fname
            if not p.is_file():
                raise DatasetError(f"AID image listed in the split is missing: {p}")
            paths.append(p)
            labels.append(idx)
    return AIDSubset(root, part, classes, tuple(paths), tuple(labels))


def _main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Write the fixed AID split file (run once; it is committed).")
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, default=SPLIT_FILE)
    ap.add_argument("--all-classes", action="store_true",
                    help="no unseen classes (the v2 split, training/splits/aid30_split.json)")
    args = ap.parse_args()
    split = make_split(args.root, unseen=() if args.all_classes else UNSEEN_CLASSES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(split, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _main()
