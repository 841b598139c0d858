"""Evaluation results as plain-text tables (for people) and JSON (for scripts)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned text columns, numbers right-aligned, with a rule under the header."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float, np.number)) for r in rows) for i in range(len(headers))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def pct(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (via to_dict when they have one), numpy values and paths -> plain JSON types; NaN -> None."""
    if hasattr(obj, "to_dict"):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False)


# ---- per task ----------------------------------------------------------------------
def format_zero_shot(result) -> str:
    head = (f"zero-shot: top-1 {pct(result.top1)}  top-{result.k} {pct(result.top5)}  n={result.n}  "
            f"model {result.model} on {result.provider}")
    rows = [(c, name, result.per_class_n.get(c, 0), pct(result.per_class[c]))
            for c, name in zip(result.classes, result.classnames or result.classes)]
    return head + "\n\n" + table(["class", "prompt name", "images", "top-1"], rows)


def format_retrieval(metrics: dict) -> str:
    ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith("i2t_R@"))
    rows = [("image->text", *[pct(metrics[f"i2t_R@{k}"]) for k in ks], pct(metrics["i2t_mean"])),
            ("text->image", *[pct(metrics[f"t2i_R@{k}"]) for k in ks], pct(metrics["t2i_mean"]))]
    head = (f"retrieval: {metrics['n_images']} images, {metrics['n_captions']} captions; "
            f"mean recall {pct(metrics['mean_recall'])}  model {metrics.get('model', '')} on "
            f"{metrics.get('provider', '')}")
    return head + "\n\n" + table(["direction", *[f"R@{k}" for k in ks], "mean"], rows)


def format_probe(report) -> str:
    rows = [("linear probe", pct(report.linear.accuracy), f"L2={report.linear.l2:g}"),
            ("k-NN", pct(report.knn.accuracy), f"k={report.knn.k}, T={report.knn.temperature:g}")]
    rows += [(f"{r.shots}-shot", pct(r.mean), f"+/- {100 * r.std:.2f} over {len(r.accuracies)} draws")
             for r in report.few_shot]
    head = (f"probe: {report.n_train} train / {report.n_test} test images, {len(report.classes)} classes "
            f"({report.split}); model {report.model} on {report.provider}")
    per_class = table(["class", "linear", "k-NN"],
                      [(c, pct(report.linear.per_class.get(c, float("nan"))),
                        pct(report.knn.per_class.get(c, float("nan")))) for c in report.classes])
    return head + "\n\n" + table(["method", "accuracy", "details"], rows) + "\n\n" + per_class


def format_counting(result) -> str:
    m = result.metrics
    head = (f"counting: n={m.n}, counts 1..{result.max_count} ({result.numerals}); "
            f"model {result.model} on {result.provider}")
    rows = [("all", m.n, pct(m.exact), pct(m.within1), f"{m.mae:.3f}", f"{m.baseline_mae:.3f} (={m.baseline_count:g})")]
    rows += [(obj, v.n, pct(v.exact), pct(v.within1), f"{v.mae:.3f}", f"{v.baseline_mae:.3f} (={v.baseline_count:g})")
             for obj, v in result.per_object.items()]
    return head + "\n\n" + table(["object", "images", "exact", "within 1", "MAE", "median baseline MAE"], rows)
