"""The labels of an audited layer as words the model can read: label maps, class-name files, numeric codes.

A land-cover layer often stores codes ("21", 41) instead of words. The model
reads words, so codes need a map (``--label-map FILE.json``: ``{"21": "developed
land", "41": ["a deciduous forest", "broadleaf trees"]}``: a name, or a list of
prompts of the label's own). Labels that still look like numbers are refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from ...errors import LabelError
from ...runtime.prompts import Label, read_json_object

_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)\s*$")


def label_key(value) -> str | None:
    """A field value as the text it is matched by: 21, 21.0 and '21' -> '21'; None/NaN/'' -> None."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return label_key(value.item())
    text = str(value).strip()
    return text or None


def looks_numeric(text: str) -> bool:
    return bool(_NUMBER.match(text))


def read_label_map(path: str | Path) -> dict[str, Label]:
    """JSON object: code -> name (a string) or code -> prompts (a list of strings)."""
    path = Path(path)
    raw = read_json_object(path, "label map", '{"21": "developed land"}')
    out: dict[str, Label] = {}
    for code, value in raw.items():
        key = label_key(code)
        if isinstance(value, str) and value.strip():
            out[key] = Label(value.strip())
        elif isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
            out[key] = Label(key, tuple(v.strip() for v in value))
        else:
            raise LabelError(f"{path}: code {code!r} maps to {value!r}; give a name or a list of prompts")
    return out


def read_class_names(path: str | Path) -> dict[int, str]:
    """Class names of a class raster: one name a line (value 0, 1, 2...) or 'VALUE: name' lines; '#' comments."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LabelError(f"{path}: class names file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"{path}: cannot read class names file ({exc})") from exc
    entries = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, 1)]
    entries = [(n, line) for n, line in entries if line]
    if not entries:
        raise LabelError(f"{path}: no class names found")
    explicit = [re.match(r"^([-+]?\d+)\s*[:=]\s*(.+)$", line) for _, line in entries]
    if all(explicit):
        names = {int(m.group(1)): m.group(2).strip() for m in explicit}
        if len(names) != len(entries):
            raise LabelError(f"{path}: a class value is given twice")
    elif any(explicit):
        n = entries[[m is None for m in explicit].index(True)][0]
        raise LabelError(f"{path}:{n}: mixes 'VALUE: name' lines with plain names; use one form")
    else:
        names = {i: line for i, (_, line) in enumerate(entries)}
    return names


@dataclass(frozen=True)
class Vocabulary:
    """The labels an audit scores against: one Label per distinct field value (its key), in first-seen order."""

    keys: tuple[str, ...]  # distinct field values as text, e.g. '21' or 'forest'
    labels: tuple[Label, ...]  # what the model reads for each key

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def build_vocabulary(values: Iterable[str | None], field: str, label_map: Mapping[str, Label] | None = None,
                     where: str = "labels") -> Vocabulary:
    """Distinct non-empty keys -> Labels (through ``label_map`` when given); refuses numbers and single classes."""
    keys = list(dict.fromkeys(v for v in values if v is not None))
    if not keys:
        raise LabelError(f"{where}: field {field!r} has no labels (every value is empty)")
    if label_map is not None:
        missing = [k for k in keys if k not in label_map]
        if missing:
            raise LabelError(f"{where}: field {field!r} has values missing from the label map: "
                             + ", ".join(map(repr, missing[:20])) + (" ..." if len(missing) > 20 else ""))
        labels = [label_map[k] for k in keys]
    else:
        numeric = [k for k in keys if looks_numeric(k)]
        if numeric:
            raise LabelError(
                f"{where}: field {field!r} holds numeric codes (" + ", ".join(map(repr, numeric[:10]))
                + ") that the model cannot read as words; pass a label map (--label-map FILE.json, e.g. "
                + json.dumps({numeric[0]: "developed land"}) + ") or class names")
        labels = [Label(k) for k in keys]
    if len(keys) < 2:
        raise LabelError(f"{where}: field {field!r} has a single label ({keys[0]!r}); an audit compares each "
                         "feature's label with the others, so it needs at least two")
    numeric_names = [lab.name for lab in labels if lab.prompts is None and looks_numeric(lab.name)]
    if numeric_names:
        raise LabelError(f"{where}: the label map maps codes to numbers ({', '.join(numeric_names[:10])}); "
                         "map them to words")
    names = [lab.name.casefold() for lab in labels if lab.prompts is None]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabelError(f"{where}: field {field!r} has several values that read as the same label "
                         f"({', '.join(dup)}: e.g. differing only in case, or codes mapped to one name); merge "
                         "them first, or give each its own words with --label-map")
    return Vocabulary(tuple(keys), tuple(labels))
