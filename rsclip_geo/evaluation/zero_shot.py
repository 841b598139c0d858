"""Zero-shot classification accuracy of a bundle on a folder-per-class image set.

Class prompts are built exactly as in tile-classify (``model.class_embeddings``
with the bundle's templates unless others are given), so the number measured
here is the one a user gets on tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import LabelError
from ..runtime.prompts import Label
from .datasets import ImageFolderDataset, as_folder_dataset, classnames_for, read_classnames
from .embed import ProgressCallback, embed_images


@dataclass
class ZeroShotResult:
    """Accuracies as fractions in [0, 1]; ``top5`` is top-``k`` with ``k = min(5, number of classes)``."""

    top1: float
    top5: float
    n: int
    per_class: dict[str, float]
    confusion: np.ndarray  # [C, C] counts, rows = true folder, columns = predicted
    classes: list[str] = field(default_factory=list)
    classnames: list[str] = field(default_factory=list)
    k: int = 5
    per_class_n: dict[str, int] = field(default_factory=dict)
    model: str = ""
    provider: str = ""
    templates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "top5_k": self.k, "n": self.n, "per_class": self.per_class,
                "per_class_n": self.per_class_n, "classes": self.classes, "classnames": self.classnames,
                "confusion": self.confusion.tolist(), "model": self.model, "provider": self.provider,
                "templates": self.templates}


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool [N]: the true label is among the ``k`` best scores (ties broken towards the lower class index)."""
    k = max(1, min(int(k), scores.shape[1]))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (order == np.asarray(labels)[:, None]).any(axis=1)


def zero_shot_from_embeddings(image_emb: np.ndarray, labels: Sequence[int] | np.ndarray, class_emb: np.ndarray,
                              classes: Sequence[str], k: int = 5) -> ZeroShotResult:
    """Metrics from normalised image embeddings [N, D], true class indices [N] and class embeddings [C, D]."""
    labels = np.asarray(labels, dtype=np.int64)
    classes = list(classes)
    c = len(classes)
    if class_emb.shape[0] != c:
        raise ValueError(f"{class_emb.shape[0]} class embeddings for {c} classes")
    if len(labels) != len(image_emb):
        raise ValueError(f"{len(labels)} labels for {len(image_emb)} image embeddings")
    if len(labels) == 0:
        raise ValueError("no images to evaluate")
    scores = image_emb @ class_emb.T
    pred = np.argmax(scores, axis=1)  # first maximum, same tie rule as topk_hits
    k = max(1, min(int(k), c))
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(axis=1)
    per_class = {name: float(confusion[i, i] / support[i]) if support[i] else float("nan")
                 for i, name in enumerate(classes)}
    return ZeroShotResult(top1=float(np.mean(pred == labels)), top5=float(np.mean(topk_hits(scores, labels, k))),
                          n=int(len(labels)), per_class=per_class, confusion=confusion, classes=classes, k=k,
                          per_class_n={name: int(s) for name, s in zip(classes, support)})


def evaluate_zero_shot(model, dataset: ImageFolderDataset | str | Path,
                       classnames: Mapping[str, str] | Sequence[str] | str | Path | None = None,
                       templates: Sequence[str] | None = None, k: int = 5,
                       progress: ProgressCallback | None = None,
                       image_embeddings: np.ndarray | None = None) -> ZeroShotResult:
    """Zero-shot top-1/top-k accuracy of ``model`` on ``dataset`` (a folder or an ImageFolderDataset).

    ``classnames``: folder -> prompt name mapping, a list aligned with ``dataset.classes``, a JSON file,
    or None (folder names humanized: 'DenseResidential' -> 'dense residential'). ``image_embeddings``
    skips encoding when the caller already has them (same order as ``dataset.paths``).
    """
    dataset = as_folder_dataset(dataset)
    if isinstance(classnames, (str, Path)):
        names = read_classnames(classnames, dataset.classes)
    else:
        names = classnames_for(dataset.classes, classnames)
    if len(dataset.classes) < 2:
        raise LabelError(f"{dataset.root}: zero-shot needs at least 2 classes, found {len(dataset.classes)}")
    templates = list(templates) if templates else list(model.bundle.templates)
    class_emb = model.class_embeddings([Label(n) for n in names], templates)
    emb = image_embeddings if image_embeddings is not None else embed_images(model, dataset.paths, progress)
    result = zero_shot_from_embeddings(emb, dataset.labels, class_emb, dataset.classes, k=k)
    result.classnames = names
    result.model = model.run_label
    result.provider = model.provider
    result.templates = templates
    return result
