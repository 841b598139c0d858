"""Box-to-Caption (RemoteCLIP, Liu et al. 2023): five rule-based captions per image from its boxes.

Detection sets have boxes, not sentences; B2C turns them into captions so they can be used for
contrastive training. Per image: caption 1 names the objects in the centre, caption 2 the objects
away from the centre, captions 3-5 give counts per category ("a ship", "three ships",
"many ships" above ten). Template choice and listing order of captions 4-5 come from a seeded RNG,
so the same seed gives the same captions.

Large images are chipped into tiles; a box belongs to a chip when its box centre lies in the
chip's half-open window [x0, x1) x [y0, y1) and is then clipped to the chip. Chips keep their full
size: the last chip of a row/column is moved back to end at the image edge, so with stride == chip
size a box lands in exactly one chip except in that overlap strip; overlapping chips can share a box.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from .boxes import Box
from .names import count_phrase, join_phrases, readable_name

CENTER_FRACTION = 0.5  # the centre region is the middle half of the image in x and in y
MAX_CLASSES = 5  # categories listed per caption, most frequent first (keeps captions within 77 tokens)

CENTER_TEMPLATES = (
    "There {be} {objects} in the centre of the image.",
    "In the middle of the scene there {be} {objects}.",
    "At the centre of this aerial image there {be} {objects}.",
)
CENTER_NONE = "There are no {names} in the centre of the image."
AWAY_TEMPLATES = (
    "There {be} {objects} away from the centre of the image.",
    "Towards the edges of the image there {be} {objects}.",
    "In the outer part of the image there {be} {objects}.",
)
AWAY_NONE = "Only the centre of the image has {objects}."
COUNT_FIRST = "There {be} {objects} in the image."
COUNT_TEMPLATES = (
    "An aerial image with {objects}.",
    "A remote sensing image showing {objects}.",
    "This satellite image contains {objects}.",
    "In this overhead view there {be} {objects}.",
)

Window = tuple[int, int, int, int]


def count_boxes(boxes: Iterable[Box]) -> dict[str, int]:
    """Per-class counts, most frequent first then by name (a stable, reusable order)."""
    counts = Counter(b.name for b in boxes)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def split_center(boxes: Sequence[Box], width: float, height: float,
                 center_fraction: float = CENTER_FRACTION) -> tuple[list[Box], list[Box]]:
    """(centre, away): a box is in the centre when its centre lies in the middle `center_fraction` of both axes."""
    mx, my = width * (1 - center_fraction) / 2, height * (1 - center_fraction) / 2
    center, away = [], []
    for b in boxes:
        cx, cy = b.center
        (center if mx <= cx <= width - mx and my <= cy <= height - my else away).append(b)
    return center, away


def _fill(template: str, counts: dict[str, int], rng: random.Random | None, max_classes: int) -> str:
    items = list(counts.items())[:max_classes]
    if rng is not None:
        rng.shuffle(items)
    phrases = [count_phrase(n, name) for name, n in items]
    be = "is" if items[0][1] == 1 else "are"
    return template.format(be=be, objects=join_phrases(phrases))


def _names(counts: dict[str, int], max_classes: int) -> str:
    plurals = [readable_name(name)[1] for name in list(counts)[:max_classes]]
    return ", ".join(plurals[:-1]) + " or " + plurals[-1] if len(plurals) > 1 else plurals[0]


def b2c_captions(boxes: Sequence[Box], width: float, height: float, seed: int | str = 0,
                 center_fraction: float = CENTER_FRACTION, max_classes: int = MAX_CLASSES) -> list[str]:
    """Five captions for an image of `width` x `height` pixels with these boxes; [] when there are none."""
    if not boxes:
        return []
    rng = random.Random(f"b2c:{seed}")
    counts = count_boxes(boxes)
    center, away = split_center(boxes, width, height, center_fraction)
    c_counts, a_counts = count_boxes(center), count_boxes(away)
    captions = [
        _fill(rng.choice(CENTER_TEMPLATES), c_counts, None, max_classes) if center
        else CENTER_NONE.format(names=_names(counts, max_classes)),
        _fill(rng.choice(AWAY_TEMPLATES), a_counts, None, max_classes) if away
        else _fill(AWAY_NONE, counts, None, max_classes),
        _fill(COUNT_FIRST, counts, None, max_classes),
    ]
    for template in rng.sample(COUNT_TEMPLATES, 2):
        captions.append(_fill(template, counts, rng, max_classes))
    return captions


def _starts(size: int, chip: int, stride: int) -> list[int]:
    if size <= chip:
        return [0]
    starts = list(range(0, size - chip + 1, stride))
    if starts[-1] + chip < size:
        starts.append(size - chip)  # last chip flush with the edge so the whole image is covered
    return starts


def chip_windows(width: int, height: int, chip_size: int, stride: int | None = None) -> list[Window]:
    """(x0, y0, x1, y1) windows row by row; an image smaller than a chip gives one clipped window."""
    stride = chip_size if stride is None else stride
    if chip_size <= 0 or stride <= 0:
        raise ValueError(f"chip_size and stride must be positive, got {chip_size} and {stride}")
    return [(x0, y0, min(x0 + chip_size, width), min(y0 + chip_size, height))
            for y0 in _starts(height, chip_size, stride) for x0 in _starts(width, chip_size, stride)]


def boxes_in_window(boxes: Iterable[Box], window: Window) -> list[Box]:
    """Boxes whose centre is in the half-open window, clipped and in window coordinates."""
    x0, y0, x1, y1 = window
    return [b.clipped(x0, y0, x1, y1) for b in boxes
            if x0 <= b.center[0] < x1 and y0 <= b.center[1] < y1]


@dataclass(frozen=True)
class ChipCaptions:
    """One chip: its window in the source image, its clipped boxes, per-class counts and captions."""

    window: Window
    boxes: tuple[Box, ...]
    counts: dict[str, int]
    captions: list[str]


def chip_captions(boxes: Sequence[Box], width: int, height: int, chip_size: int, stride: int | None = None,
                  seed: int | str = 0, keep_empty: bool = False, **caption_kwargs) -> list[ChipCaptions]:
    """Chip an annotated image and caption each chip from the boxes it owns (see module docstring)."""
    out = []
    for window in chip_windows(width, height, chip_size, stride):
        inside = boxes_in_window(boxes, window)
        if not inside and not keep_empty:
            continue
        w, h = window[2] - window[0], window[3] - window[1]
        caps = b2c_captions(inside, w, h, seed=f"{seed}:{window[0]}:{window[1]}", **caption_kwargs)
        out.append(ChipCaptions(window, tuple(inside), count_boxes(inside), caps))
    return out
