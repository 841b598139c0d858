"""Prompt templates and label handling for zero-shot scoring.

A label is a class name plus the prompts that describe it; by default the
prompts come from the bundle's templates (RemoteCLIP-style, overhead wording).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import LabelError

# Overhead-imagery templates in the spirit of RemoteCLIP's zero-shot prompts.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a satellite photo of {}.",
    "an aerial photo of {}.",
    "a remote sensing image of {}.",
    "an overhead view of {}.",
    "a top-down aerial image of {}.",
    "a high resolution satellite image of {}.",
    "an aerial view of {}.",
)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def humanize_class_name(name: str) -> str:
    """'DenseResidential' / 'dense_residential' -> 'dense residential'."""
    spaced = _CAMEL.sub(" ", name.replace("_", " ").replace("-", " "))
    return " ".join(spaced.split()).lower()


@dataclass(frozen=True)
class Label:
    """A class to score: its name (as shown in outputs) and its prompts (None: use templates)."""

    name: str
    prompts: tuple[str, ...] | None = None

    def texts(self, templates: Sequence[str]) -> list[str]:
        if self.prompts:
            return list(self.prompts)
        return [t.format(self.name) for t in templates]


def parse_labels(labels: str | Iterable[str | Label]) -> list[Label]:
    """Labels from a comma-separated string or a list; rejects empty and duplicate names."""
    if isinstance(labels, (bytes, bytearray)):
        raise LabelError("labels must be text (str), not bytes; decode them first, e.g. data.decode('utf-8')")
    if labels is None:
        raise LabelError("no labels given; pass e.g. ['water', 'forest', 'farmland']")
    if isinstance(labels, str):
        items: list[str | Label] = [s for s in labels.split(",")]
    else:
        items = list(labels)
    out: list[Label] = []
    for i, item in enumerate(items):
        if not isinstance(item, (str, Label)):  # None, numbers, bytes: str() would make them labels silently
            raise LabelError(f"label {i + 1} is {type(item).__name__} {item!r}; labels are text (str) or Label")
        label = item if isinstance(item, Label) else Label(item.strip())
        if not label.name.strip():
            continue
        out.append(Label(label.name.strip(), label.prompts))
    return _checked(out, "labels")


MAX_TEXT_FILE_BYTES = 1 << 20  # a labels/templates file is typed by a person: 1 MiB is far more than enough
MAX_LABELS = 10_000


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Prompt templates: a list of strings, each with one '{}' where the class name goes."""
    if isinstance(templates, (str, bytes)):
        raise LabelError(f"templates must be a list of strings, not one string: [{templates!r}]")
    out = tuple(templates)
    if not out:
        raise LabelError("no prompt templates given")
    for t in out:
        if not isinstance(t, str) or "{}" not in t:
            raise LabelError(f"template {t!r} has no '{{}}' where the class name goes, e.g. "
                             "'a satellite photo of {}.'")
        try:
            t.format("x")
        except (IndexError, KeyError, ValueError) as exc:
            raise LabelError(f"template {t!r}: only one '{{}}' may hold the class name ({exc})") from None
    return out


def _read_text(path: Path, what: str) -> str:
    """UTF-8 text (a BOM is dropped), at most MAX_TEXT_FILE_BYTES read (so /dev/zero or a raster given by
    mistake is refused, not read into memory), no NUL bytes (a binary file)."""
    try:
        if path.is_dir():
            raise LabelError(f"{path}: is a folder, expected a {what} file")
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT_FILE_BYTES + 1)
    except FileNotFoundError:
        raise LabelError(f"{path}: {what} file does not exist") from None
    except OSError as exc:
        raise LabelError(f"{path}: cannot read {what} file ({exc})") from exc
    if len(raw) > MAX_TEXT_FILE_BYTES:
        raise LabelError(f"{path}: larger than {MAX_TEXT_FILE_BYTES // 2**20} MiB; not a {what} file "
                         "(one entry a line)")
    if b"\0" in raw:
        raise LabelError(f"{path}: contains NUL bytes (the first at byte {raw.index(bytes(1))}); a {what} file "
                         "is UTF-8 text, one entry a line (is it a binary or UTF-16 file?)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: not UTF-8 text ({exc})") from exc


def read_json_object(path: str | Path, what: str, example: str) -> dict:
    """A small JSON object typed by a person (a label map, class names): read as ``_read_text`` reads, so a
    missing, binary, huge or broken file is a LabelError naming the file and what was expected."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path, what))
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: not a readable JSON {what} ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise LabelError(f"{path}: a {what} is a non-empty JSON object like {example}")
    return data


def read_templates_file(path: str | Path) -> list[str]:
    """One prompt template a line, each containing '{}'; blank lines and '#' comment lines skipped."""
    path = Path(path)
    out = []
    for lineno, raw in enumerate(_read_text(path, "templates").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{}" not in line:
            raise LabelError(f"{path}:{lineno}: template {line!r} has no '{{}}' where the class name goes")
        out.append(line)
    if not out:
        raise LabelError(f"{path}: no templates found")
    return out


def read_labels_file(path: str | Path) -> list[Label]:
    """One label a line: ``name`` or ``name: prompt one | prompt two``; '#' starts a comment."""
    path = Path(path)
    text = _read_text(path, "labels")
    out: list[Label] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not name:
            raise LabelError(f"{path}:{lineno}: empty label name in {raw!r}")
        prompts = tuple(p.strip() for p in rest.split("|") if p.strip()) if sep else ()
        if sep and not prompts:
            raise LabelError(f"{path}:{lineno}: label {name!r} has ':' but no prompts after it")
        out.append(Label(name, prompts or None))
        if len(out) > MAX_LABELS:
            raise LabelError(f"{path}: more than {MAX_LABELS:,} labels; zero-shot labels are a short list of "
                             "classes")
    return _checked(out, str(path))


def _checked(labels: list[Label], where: str) -> list[Label]:
    if not labels:
        raise LabelError(f"{where}: no labels given; pass e.g. --labels 'water,forest,farmland'")
    seen: dict[str, str] = {}
    for label in labels:
        key = label.name.casefold()
        if key in seen:
            raise LabelError(f"{where}: duplicate label {label.name!r} (also given as {seen[key]!r})")
        seen[key] = label.name
    return labels
