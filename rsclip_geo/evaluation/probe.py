"""Frozen-embedding classifiers: linear probe, k-NN and few-shot, in numpy only.

The linear probe is multinomial logistic regression on L2-normalised image
embeddings (centred and scaled), fitted by full-batch accelerated
gradient descent (FISTA with restarts; the loss is convex, so this converges to
the same optimum L-BFGS would). Its L2 penalty is chosen on a held-out part of
the training set. Everything is seeded and deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import OptionError
from ..runtime.encoder import l2_normalize
from .datasets import DatasetError, ImageFolderDataset, as_folder_dataset, stratified_split
from .embed import ProgressCallback, embed_images

L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # strongest first: each fit warm-starts the next
DEFAULT_L2 = 1e-3  # used when the training set is too small to hold out a validation part


def _l2n(x: np.ndarray) -> np.ndarray:
    """Unit rows in float64: the probe's gradient descent runs in double precision."""
    return l2_normalize(np.asarray(x, dtype=np.float64))


def _per_class(pred: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None) -> dict[str, float]:
    n_classes = len(classes) if classes is not None else int(max(labels.max(), pred.max())) + 1
    names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    out = {}
    for i, name in enumerate(names):
        mask = labels == i
        if mask.any():
            out[name] = float(np.mean(pred[mask] == i))
    return out


# ---- logistic regression -------------------------------------------------------
@dataclass
class LinearProbeModel:
    """A fitted softmax classifier on centred, scaled, L2-normalised embeddings."""

    weights: np.ndarray  # [D + 1, C], last row is the bias
    mean: np.ndarray
    scale: np.ndarray
    l2: float
    iterations: int = 0

    def _design(self, emb: np.ndarray) -> np.ndarray:
        x = (_l2n(emb) - self.mean) / self.scale
        return np.hstack([x, np.ones((len(x), 1))])

    def decision_function(self, emb: np.ndarray) -> np.ndarray:
        return self._design(emb) @ self.weights

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        return _softmax(self.decision_function(emb))

    def predict(self, emb: np.ndarray) -> np.ndarray:
        return np.argmax(self.decision_function(emb), axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fista(x: np.ndarray, onehot: np.ndarray, l2: float, w0: np.ndarray, lipschitz: float,
           max_iter: int, tol: float) -> tuple[np.ndarray, int]:
    """Minimise mean cross-entropy + l2/2 * ||W without bias||^2 from ``w0``."""
    n = len(x)
    reg = np.ones((x.shape[1], 1))
    reg[-1] = 0.0  # the bias is not penalised
    step = 1.0 / (lipschitz + l2)
    w, v, t = w0.copy(), w0.copy(), 1.0
    it = 0
    for it in range(1, max_iter + 1):
        grad = x.T @ (_softmax(x @ v) - onehot) / n + l2 * reg * v
        w_new = v - step * grad
        if np.sum(grad * (w_new - w)) > 0:  # adaptive restart: momentum pointed uphill
            t, v = 1.0, w.copy()
            continue
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        v = w_new + ((t - 1) / t_new) * (w_new - w)
        delta = np.linalg.norm(w_new - w)
        w, t = w_new, t_new
        if delta <= tol * max(1.0, np.linalg.norm(w)):
            break
    return w, it


def fit_linear_probe(emb: np.ndarray, labels: Sequence[int] | np.ndarray, n_classes: int | None = None,
                     l2: float = DEFAULT_L2, w0: np.ndarray | None = None, max_iter: int = 1000,
                     tol: float = 1e-5) -> LinearProbeModel:
    """Fit one softmax classifier with a fixed L2 penalty."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(n_classes or labels.max() + 1)
    x = _l2n(emb)
    mean = x.mean(axis=0)
    # one global scale (mean squared norm 1 after centring): keeps the embedding geometry, unlike
    # per-dimension standardisation, which blows up near-constant dimensions on tiny training sets
    scale = np.full_like(mean, max(float(np.sqrt(np.mean(np.sum((x - mean) ** 2, axis=1)))), 1e-6))
    design = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    onehot = np.eye(n_classes)[labels]
    # Hessian of the mean softmax cross-entropy is bounded by 0.5 * X^T X / n
    lipschitz = 0.5 * float(np.linalg.eigvalsh(design.T @ design / len(design))[-1])
    start = w0 if w0 is not None else np.zeros((design.shape[1], n_classes))
    w, it = _fista(design, onehot, float(l2), start, lipschitz, max_iter, tol)
    return LinearProbeModel(w, mean, scale, float(l2), it)


@dataclass
class ProbeResult:
    accuracy: float
    per_class: dict[str, float]
    l2: float
    n_train: int
    n_test: int
    l2_scores: dict[str, float] = field(default_factory=dict)  # validation accuracy per tried L2

    def to_dict(self) -> dict:
        return asdict(self)


def select_l2(emb: np.ndarray, labels: np.ndarray, n_classes: int, grid: Sequence[float] = L2_GRID,
              val_fraction: float = 0.2, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The L2 penalty with the best accuracy on a stratified held-out part (ties: the stronger penalty)."""
    counts = np.bincount(labels, minlength=n_classes)
    if counts[counts > 0].min() < 2:
        return DEFAULT_L2, {}
    fit_idx, val_idx = stratified_split(labels, 1 - val_fraction, seed)
    if len(val_idx) == 0:
        return DEFAULT_L2, {}
    scores, w, best = {}, None, (-1.0, DEFAULT_L2)
    for lam in sorted(grid, reverse=True):
        model = fit_linear_probe(emb[fit_idx], labels[fit_idx], n_classes, lam, w0=w)
        w = model.weights
        acc = float(np.mean(model.predict(emb[val_idx]) == labels[val_idx]))
        scores[f"{lam:g}"] = acc
        if acc > best[0]:
            best = (acc, lam)
    return best[1], scores


def linear_probe(train_emb: np.ndarray, train_labels: Sequence[int] | np.ndarray, test_emb: np.ndarray,
                 test_labels: Sequence[int] | np.ndarray, classes: Sequence[str] | None = None,
                 l2: float | None = None, grid: Sequence[float] = L2_GRID, val_fraction: float = 0.2,
                 seed: int = 0) -> ProbeResult:
    """Test accuracy of a logistic-regression probe; ``l2=None`` picks it on held-out training data."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = len(classes) if classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    scores: dict[str, float] = {}
    if l2 is None:
        l2, scores = select_l2(train_emb, train_labels, n_classes, grid, val_fraction, seed)
    model = fit_linear_probe(train_emb, train_labels, n_classes, l2)
    pred = model.predict(test_emb)
    return ProbeResult(float(np.mean(pred == test_labels)), _per_class(pred, test_labels, classes), float(l2),
                       len(train_labels), len(test_labels), scores)


# ---- k-NN ----------------------------------------------------------------------------
@dataclass
class KnnResult:
    accuracy: float
    per_class: dict[str, float]
    k: int
    temperature: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


def knn_predict(train_emb: np.ndarray, train_labels: np.ndarray, query_emb: np.ndarray, n_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> np.ndarray:
    """Cosine k-NN; each neighbour votes exp(similarity / temperature) (as in DINO's k-NN eval)."""
    train = _l2n(train_emb)
    query = _l2n(query_emb)
    k = max(1, min(int(k), len(train)))
    out = np.empty(len(query), dtype=np.int64)
    for s in range(0, len(query), chunk):
        sim = query[s:s + chunk] @ train.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1)
        votes = np.zeros((len(sim), n_classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_labels[idx]), np.exp((top - 1.0) / temperature))
        out[s:s + chunk] = np.argmax(votes, axis=1)
    return out


def knn(train_emb: np.ndarray, train_labels: Sequence[int] | np.ndarray, test_emb: np.ndarray,
        test_labels: Sequence[int] | np.ndarray, classes: Sequence[str] | None = None, k: int = 20,
        temperature: float = 0.07) -> KnnResult:
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = len(classes) if classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    pred = knn_predict(train_emb, train_labels, test_emb, n_classes, k, temperature)
    return KnnResult(float(np.mean(pred == test_labels)), _per_class(pred, test_labels, classes),
                     min(int(k), len(train_labels)), float(temperature), len(train_labels), len(test_labels))


# ---- few-shot --------------------------------------------------------------------------
@dataclass
class FewShotResult:
    shots: int
    mean: float
    std: float
    accuracies: list[float]
    n_train_per_draw: int

    def to_dict(self) -> dict:
        return asdict(self)


def sample_shots(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    """``shots`` random indices per class (all of a class that has fewer)."""
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.extend(rng.choice(idx, size=min(shots, len(idx)), replace=False))
    return np.sort(np.asarray(picked, dtype=np.int64))


def few_shot(train_emb: np.ndarray, train_labels: Sequence[int] | np.ndarray, test_emb: np.ndarray,
             test_labels: Sequence[int] | np.ndarray, shots: Sequence[int] = (1, 4, 16), draws: int = 5,
             classes: Sequence[str] | None = None, seed: int = 0) -> list[FewShotResult]:
    """n-shot linear probes, each averaged over ``draws`` seeded samples of the training set."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    n_classes = len(classes) if classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    results = []
    for n in shots:
        if n < 1:
            raise OptionError(f"shots must be >= 1, got {n}")
        rng = np.random.default_rng([seed, n])
        accs, size = [], 0
        for d in range(max(1, int(draws))):
            idx = sample_shots(train_labels, int(n), rng)
            size = len(idx)
            lam, _ = select_l2(train_emb[idx], train_labels[idx], n_classes, seed=seed + d)
            model = fit_linear_probe(train_emb[idx], train_labels[idx], n_classes, lam)
            accs.append(float(np.mean(model.predict(test_emb) == test_labels)))
        results.append(FewShotResult(int(n), float(np.mean(accs)), float(np.std(accs)), accs, size))
    return results


# ---- the whole protocol on image folders ---------------------------------------------------
@dataclass
class ProbeReport:
    linear: ProbeResult
    knn: KnnResult
    few_shot: list[FewShotResult]
    classes: list[str]
    n_train: int
    n_test: int
    model: str = ""
    provider: str = ""
    split: str = ""

    def to_dict(self) -> dict:
        return {"linear_probe": self.linear.to_dict(), "knn": self.knn.to_dict(),
                "few_shot": [r.to_dict() for r in self.few_shot], "classes": self.classes,
                "n_train": self.n_train, "n_test": self.n_test, "model": self.model, "provider": self.provider,
                "split": self.split}


def _aligned(train: ImageFolderDataset, test: ImageFolderDataset) -> None:
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DatasetError(f"{train.root} and {test.root} must have the same class folders "
                           f"(only in train: {only_train or '-'}; only in test: {only_test or '-'})")


def evaluate_probe(model, dataset: ImageFolderDataset | str | Path,
                   train_dataset: ImageFolderDataset | str | Path | None = None, split: float = 0.8,
                   shots: Sequence[int] = (1, 4, 16), k: int = 20, draws: int = 5, seed: int = 0,
                   limit_per_class: int | None = None, progress: ProgressCallback | None = None) -> ProbeReport:
    """Linear probe, k-NN and few-shot on frozen embeddings of ``model``.

    With ``train_dataset`` the probes train on it and test on ``dataset``; otherwise ``dataset`` is split
    per class (``split`` = training fraction, seeded).
    """
    data = as_folder_dataset(dataset, limit_per_class, seed)
    emb = embed_images(model, data.paths, progress)
    if train_dataset is not None:
        train = as_folder_dataset(train_dataset, limit_per_class, seed)
        _aligned(train, data)
        tr_emb, tr_y = embed_images(model, train.paths, progress), train.labels
        te_emb, te_y = emb, data.labels
        how = f"train {train.root}, test {data.root}"
    else:
        tr_idx, te_idx = stratified_split(data.labels, split, seed)
        if len(te_idx) == 0:
            raise DatasetError(f"{data.root}: too few images to split off a test part (need >= 2 per class)")
        tr_emb, tr_y, te_emb, te_y = emb[tr_idx], data.labels[tr_idx], emb[te_idx], data.labels[te_idx]
        how = f"{split:g} of each class of {data.root} for training (seed {seed})"
    classes = data.classes
    return ProbeReport(linear=linear_probe(tr_emb, tr_y, te_emb, te_y, classes, seed=seed),
                       knn=knn(tr_emb, tr_y, te_emb, te_y, classes, k=k),
                       few_shot=few_shot(tr_emb, tr_y, te_emb, te_y, shots, draws, classes, seed),
                       classes=list(classes), n_train=len(tr_y), n_test=len(te_y),
                       model=model.run_label, provider=model.provider, split=how)
