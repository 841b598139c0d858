"""RemoteCount-style zero-shot object counting with a CLIP bundle.

For one kind of object, the prompts "a satellite photo of {n} {objects}" for
n = 1..max (numbers as words, "one".."ten", as digits, or both ensembled) are
scored against an image like zero-shot classes; the predicted count is the
best prompt, reported with its probability and the runner-up.
``CountPredictor`` works per image or per tile, so the ``count`` command reuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import LabelError
from ..runtime.prompts import Label
from .datasets import CountSet, read_counts
from .embed import ProgressCallback, embed_images

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
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
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

    def predict_images(self, images: Sequence[str | Path | np.ndarray],
                       progress: ProgressCallback | None = None) -> list[CountPrediction]:
        return self.predict(embed_images(self.model, images, progress))


def predict_count(model, image: str | Path | np.ndarray, objects: str, max_count: int = 10,
                  numerals: str | Sequence[str] = "words", template: str = DEFAULT_TEMPLATE) -> CountPrediction:
    """Count ``objects`` in one image (path or uint8 HxWx3 array)."""
    return CountPredictor(model, objects, max_count, numerals, template).predict_images([image])[0]


# ---- metrics -----------------------------------------------------------------------
@dataclass
class CountMetrics:
    n: int
    exact: float  # fraction predicted exactly
    within1: float  # fraction off by at most one
    mae: float
    baseline_mae: float  # MAE of always predicting baseline_count
    baseline_count: float  # median true count

    def to_dict(self) -> dict:
        return asdict(self)


def count_metrics(true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> CountMetrics:
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if true.shape != pred.shape or true.size == 0:
        raise ValueError(f"need equally many true and predicted counts (got {true.size} and {pred.size})")
    err = np.abs(pred - true)
    median = float(np.median(true))
    return CountMetrics(int(true.size), float(np.mean(err == 0)), float(np.mean(err <= 1)), float(err.mean()),
                        float(np.mean(np.abs(true - median))), median)


@dataclass
class CountingResult:
    metrics: CountMetrics
    per_object: dict[str, CountMetrics]
    topk: dict[int, float]  # fraction of images whose true count is among the k most probable
    predictions: list[dict] = field(default_factory=list)
    max_count: int = 10
    numerals: str = "words"
    template: str = DEFAULT_TEMPLATE
    model: str = ""
    provider: str = ""

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(), "per_object": {k: v.to_dict() for k, v in self.per_object.items()},
                "topk": {str(k): v for k, v in self.topk.items()}, "max_count": self.max_count,
                "numerals": self.numerals, "template": self.template, "model": self.model,
                "provider": self.provider, "predictions": self.predictions}


def evaluate_counting(model, data: CountSet | str | Path, max_count: int = 10,
                      numerals: str | Sequence[str] = "words", template: str = DEFAULT_TEMPLATE,
                      progress: ProgressCallback | None = None) -> CountingResult:
    """Counting accuracy on images with known counts (a CountSet or a CSV image_path,object_name,count)."""
    data = data if isinstance(data, CountSet) else read_counts(data)
    emb = embed_images(model, data.image_paths, progress)
    pred = np.zeros(len(data), dtype=np.int64)
    rows: list[dict] = [{} for _ in range(len(data))]
    hits = np.zeros((len(data), max_count), dtype=bool)
    objects = np.asarray(data.objects)
    for obj in sorted(set(data.objects)):
        idx = np.flatnonzero(objects == obj)
        predictor = CountPredictor(model, obj, max_count, numerals, template)
        probs = predictor.probabilities(emb[idx])
        ranked = np.argsort(-probs, axis=1, kind="stable") + 1  # counts, best first
        hits[idx] = np.cumsum(ranked == data.counts[idx][:, None], axis=1) > 0
        for i, p in zip(idx, predictor.predict(emb[idx])):
            pred[i] = p.count
            rows[i] = {"image": str(data.image_paths[i]), "object": obj, "true": int(data.counts[i]), **p.to_dict()}
    per_object = {obj: count_metrics(data.counts[objects == obj], pred[objects == obj])
                  for obj in sorted(set(data.objects))}
    style = numerals if isinstance(numerals, str) else ",".join(numerals)
    return CountingResult(count_metrics(data.counts, pred), per_object,
                          {k: float(hits[:, k - 1].mean()) for k in range(1, max_count + 1)}, rows, max_count,
                          style, template, model.bundle.name, model.provider)
