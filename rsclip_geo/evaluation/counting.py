"""RemoteCount-style zero-shot object counting with a CLIP bundle.

For one kind of object, the prompts "a satellite photo of {n} {objects}" for
n = 1..max (numbers as words, "one".."ten", as digits, or both ensembled) are
scored against an image like zero-shot classes; the predicted count is the
best prompt, reported with its probability and the runner-up.
The prompts and the predictor live in ``runtime/count_prompts.py`` (the ``count`` task uses the same ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..runtime.count_prompts import DEFAULT_TEMPLATE, CountPrediction, CountPredictor
from .datasets import CountSet, read_counts
from .embed import ProgressCallback, embed_images

def predict_images(predictor: CountPredictor, images: Sequence[str | Path | np.ndarray],
                   progress: ProgressCallback | None = None) -> list[CountPrediction]:
    """Counts of whole images (paths or uint8 HxWx3 arrays) with ``predictor``."""
    return predictor.predict(embed_images(predictor.model, images, progress))


def predict_count(model, image: str | Path | np.ndarray, objects: str, max_count: int = 10,
                  numerals: str | Sequence[str] = "words", template: str = DEFAULT_TEMPLATE) -> CountPrediction:
    """Count ``objects`` in one image (path or uint8 HxWx3 array)."""
    return predict_images(CountPredictor(model, objects, max_count, numerals, template), [image])[0]


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
                          style, template, model.run_label, model.provider)
