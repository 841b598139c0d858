"""Counting crops (RemoteCount style): square crops of a detection image holding exactly n objects of one class.

Why: RemoteCLIP's counting test shows a CLIP model crops with 1-10 objects of one kind and asks
"a satellite photo of {n} {objects}"; captions with numbers are also what teaches a model to count.
The same rule builds training crops (from train images) and test crops (from test images):
for each class in an image and each n up to `max_count`, seed on one object (seeded RNG), take it
and its n-1 nearest neighbours of that class, and crop the smallest square around them plus a
margin. The crop is kept only if it holds exactly those objects of that class: every other object of
the class lies wholly outside, and the chosen ones wholly inside (no cut objects to argue about).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from .boxes import Box
from .names import count_phrase, readable_name

COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
COUNT_TEMPLATES = (
    "a satellite photo of {objects}.",
    "an aerial photo of {objects}.",
    "a remote sensing image of {objects}.",
    "{objects}.",
    "an aerial image showing {objects}.",
)


@dataclass(frozen=True)
class CountCrop:
    """A square window (x0, y0, x1, y1) of an image with `count` objects of class `name` wholly inside."""

    name: str
    count: int
    window: tuple[int, int, int, int]


def _overlaps(b: Box, w: tuple[int, int, int, int]) -> bool:
    return b.xmax > w[0] and b.xmin < w[2] and b.ymax > w[1] and b.ymin < w[3]


def _inside(b: Box, w: tuple[int, int, int, int]) -> bool:
    return b.xmin >= w[0] and b.ymin >= w[1] and b.xmax <= w[2] and b.ymax <= w[3]


def _square(chosen: Sequence[Box], width: int, height: int, margin: float, min_size: int):
    x0, y0 = min(b.xmin for b in chosen), min(b.ymin for b in chosen)
    x1, y1 = max(b.xmax for b in chosen), max(b.ymax for b in chosen)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = int(round(max(side, min_size)))
    if side > min(width, height):
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, left + side, top + side


def count_crops(boxes: Sequence[Box], width: int, height: int, max_count: int = 10, seed: int | str = 0,
                tries: int = 8, margin: float = 0.15, min_size: int = 64) -> list[CountCrop]:
    """Crops with exactly n objects of one class, n = 1..max_count, at most one per (class, n) per image."""
    rng = random.Random(f"count:{seed}")
    out = []
    for name in sorted({b.name for b in boxes}):
        same = [b for b in boxes if b.name == name]
        for n in range(1, min(max_count, len(same)) + 1):
            for _ in range(tries):
                seed_box = rng.choice(same)
                cx, cy = seed_box.center
                chosen = sorted(same, key=lambda b: (b.center[0] - cx) ** 2 + (b.center[1] - cy) ** 2)[:n]
                window = _square(chosen, width, height, margin, min_size)
                if window is None:
                    continue
                hits = [b for b in same if _overlaps(b, window)]
                if len(hits) == n and all(_inside(b, window) for b in hits):
                    out.append(CountCrop(name, n, window))
                    break
    return out


def count_captions(name: str, n: int) -> list[str]:
    """Captions of a crop with n objects of one class, worded as the runtime's counting prompts are."""
    singular, plural = readable_name(name)
    phrases = [f"{COUNT_WORDS[n - 1]} {singular if n == 1 else plural}"]
    if n == 1:
        phrases.append(count_phrase(1, name))  # 'an airplane'
    return [t.format(objects=p) for p in phrases for t in COUNT_TEMPLATES]
