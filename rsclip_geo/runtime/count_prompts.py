"""RemoteCount-style counting prompts and their scoring: "a satellite photo of {n} {objects}" for n = 1..max.

The numbers are spelled as words ("one".."ten"), digits, both (ensembled) or custom words; a count is
predicted like a zero-shot class, with its probability and the runner-up. The ``count`` task scores tiles
with it and the counting evaluation scores whole images, so both measure the same predictor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import LabelError, OptionError
from .prompts import Label

DEFAULT_TEMPLATE = "a satellite photo of {n} {objects}"
NUMERAL_STYLES = ("words", "digits", "both")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")


def number_word(n: int) -> str:
    return NUMBER_WORDS[n - 1] if 1 <= n <= len(NUMBER_WORDS) else str(n)


def pluralize(name: str) -> str:
    """English plural of the last word ('storage tank' -> 'storage tanks'); a name ending in 's' is kept."""
    head, _, last = name.strip().rpartition(" ")
    low = last.lower()
    if low.endswith("s"):
        plural = last
    elif low.endswith(("x", "z", "ch", "sh")):
        plural = last + "es"
    elif low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


MAX_COUNT = 1000  # one prompt per count: RemoteCount scores 1-10; 10^9 prompts once asked for 7.45 GiB at once


def check_max_count(max_count) -> int:
    """1..MAX_COUNT as an int (one prompt per count); anything else is an OptionError."""
    if isinstance(max_count, bool) or not 1 <= int(max_count) <= MAX_COUNT:
        raise OptionError(f"max_count must be 1-{MAX_COUNT}, got {max_count!r}")
    return int(max_count)


def _numerals(numerals: str | Sequence[str], max_count: int) -> list[tuple[str, ...]]:
    """The number spellings for counts 1..max_count (several for 'both')."""
    if isinstance(numerals, str):
        if numerals not in NUMERAL_STYLES:
            raise LabelError(f"numerals must be one of {', '.join(NUMERAL_STYLES)} or a list of words, "
                             f"got {numerals!r}")
        words = [(number_word(n),) for n in range(1, max_count + 1)]
        digits = [(str(n),) for n in range(1, max_count + 1)]
        return {"words": words, "digits": digits, "both": [w + d for w, d in zip(words, digits)]}[numerals]
    custom = [str(s).strip() for s in numerals]
    if len(custom) < max_count or not all(custom[:max_count]):
        raise LabelError(f"{len(custom)} numerals given for counts 1..{max_count}; give at least {max_count}")
    return [(s,) for s in custom[:max_count]]


def count_prompts(objects: str, max_count: int = 10, numerals: str | Sequence[str] = "words",
                  template: str = DEFAULT_TEMPLATE, plural: bool = True) -> list[tuple[str, ...]]:
    """Prompts for counts 1..max_count: ``template`` with {n} and {objects} (plural from 2 on)."""
    max_count = check_max_count(max_count)
    if "{n}" not in template or "{objects}" not in template:
        raise LabelError(f"count template {template!r} must contain '{{n}}' and '{{objects}}'")
    if not objects.strip():
        raise LabelError("empty object name for counting")
    out = []
    for n, spellings in enumerate(_numerals(numerals, max_count), 1):
        name = pluralize(objects) if plural and n != 1 else objects.strip()
        out.append(tuple(template.format(n=s, objects=name) for s in spellings))
    return out


@dataclass
class CountPrediction:
    count: int
    probability: float
    runner_up: int
    runner_up_probability: float

    def to_dict(self) -> dict:
        return asdict(self)


class CountPredictor:
    """Count one kind of object in images or tiles: prompt embeddings are computed once."""

    def __init__(self, model, objects: str, max_count: int = 10, numerals: str | Sequence[str] = "words",
                 template: str = DEFAULT_TEMPLATE, plural: bool = True):
        self.model = model
        self.objects = objects
        self.counts = np.arange(1, max_count + 1)
        self.prompts = count_prompts(objects, max_count, numerals, template, plural)
        labels = [Label(str(n), p) for n, p in zip(self.counts, self.prompts)]
        self.text_emb = model.class_embeddings(labels)

    def probabilities(self, image_emb: np.ndarray) -> np.ndarray:
        """[N, max_count] softmax over counts 1..max_count."""
        return self.model.probabilities(np.atleast_2d(image_emb), self.text_emb)

    def predict(self, image_emb: np.ndarray) -> list[CountPrediction]:
        """Best and runner-up count per embedding (ties go to the smaller count)."""
        probs = self.probabilities(image_emb)
        order = np.argsort(-probs, axis=1, kind="stable")
        out = []
        for p, o in zip(probs, order):
            second = o[1] if len(o) > 1 else o[0]
            out.append(CountPrediction(int(self.counts[o[0]]), float(p[o[0]]), int(self.counts[second]),
                                       float(p[second])))
        return out
