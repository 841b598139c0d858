"""Readers for the caption-set formats RS training data comes in, yielding one common record.

Karpathy-style JSON (RSICD, RSITMD, UCM-captions), path,caption CSV (RS5M / GAIA style), the
one-row-per-image CSV with a list of sentences that VT-RSBS publishes for RSICD/RSITMD/UCM/Sydney,
and webdataset tar shards (KEY.jpg|png + KEY.txt|json), read with the standard library only.
"""

from __future__ import annotations

import ast
import csv
import json
import tarfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DatasetError, MissingImageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
TEXT_EXTS = ("txt", "json")
PATH_HEADERS = ("path", "filepath", "file_path", "filename", "file_name", "file", "image", "img", "image_path",
                "img_name", "image_name", "url")
CAPTION_HEADERS = ("caption", "captions", "text", "title", "sentence", "raw", "description", "caption_en")


@dataclass(frozen=True)
class CaptionRecord:
    """One image with its captions: `image` is a Path (files) or bytes (tar members); `key` names the source entry."""

    image: Path | bytes
    captions: tuple[str, ...]
    split: str | None
    key: str
    label: str | None = None  # scene class, where the source names one (RSICD's file names, VT-RSBS 'label')


def _checked(path: Path, where: str, check_exists: bool) -> Path:
    if check_exists and not path.is_file():
        raise MissingImageError(f"{where}: image file not found: {path}")
    return path


def read_karpathy_json(path: str | Path, image_root: str | Path | None = None, split: str | None = None,
                       check_exists: bool = True) -> Iterator[CaptionRecord]:
    """`{"images": [{"filename", "split", "sentences": [{"raw"}]}]}`; images under `image_root` (default: JSON's folder)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a Karpathy-style caption JSON ({exc})") from None
    for i, item in enumerate(images):
        where = f"{path}: images[{i}]"
        if "filename" not in item:
            raise DatasetError(f"{where}: no 'filename'")
        if split is not None and item.get("split") != split:
            continue
        captions = []
        for sent in item.get("sentences", []):
            text = sent.get("raw") if isinstance(sent, dict) else sent
            if text is None and isinstance(sent, dict):
                text = " ".join(sent.get("tokens", []))
            captions.append(str(text))
        image = _checked(root / item.get("filepath", "") / item["filename"], f"{where} ({item['filename']})",
                         check_exists)
        yield CaptionRecord(image, tuple(captions), item.get("split"), item["filename"])


def _is_header(row: list[str]) -> bool:
    lowered = [c.strip().lower() for c in row]
    named = any(c in PATH_HEADERS for c in lowered) and any(c in CAPTION_HEADERS for c in lowered)
    return named or not row[0].strip().lower().endswith(IMAGE_EXTS)


def read_caption_csv(path: str | Path, image_root: str | Path | None = None, delimiter: str | None = None,
                     split: str | None = None, check_exists: bool = True) -> Iterator[CaptionRecord]:
    """One record per row of `path,caption`. A first row is a header when it names a path and a caption
    column (e.g. `filepath,title`) or its first cell is not an image file name; relative paths resolve
    against `image_root` (default: the CSV's folder). Tab-separated when the file ends in .tsv."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    delimiter = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        first = next(reader, None)
        if first is None:
            return
        path_col, cap_col, pending = 0, 1, None
        if _is_header(first):
            lowered = [c.strip().lower() for c in first]
            path_col = next((i for i, c in enumerate(lowered) if c in PATH_HEADERS), 0)
            cap_col = next((i for i, c in enumerate(lowered) if c in CAPTION_HEADERS), 1 if path_col != 1 else 0)
        else:
            pending = first
        rows = chain([(1, pending)] if pending else [], ((reader.line_num, r) for r in reader))
        for line, row in rows:
            if not row or not any(c.strip() for c in row):
                continue
            where = f"{path}: line {line}"
            if len(row) <= max(path_col, cap_col):
                raise DatasetError(f"{where}: expected a path and a caption column, got {row!r}")
            image = Path(row[path_col].strip())
            image = _checked(image if image.is_absolute() else root / image, where, check_exists)
            yield CaptionRecord(image, (row[cap_col],), split, row[path_col].strip())


def read_sentence_list_csv(path: str | Path, image_root: str | Path, split: str | None = None,
                           check_exists: bool = True) -> Iterator[CaptionRecord]:
    """VT-RSBS metadata CSV: columns `filename`, `split`, optional `label`, and `sentence` holding a Python list
    literal of the image's captions (e.g. metadata/RSICD/RSICD.csv, 10,921 rows x 5 captions)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"filename", "split", "sentence"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: not a sentence-list caption CSV; missing columns {sorted(missing)}")
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            if split is not None and row["split"] != split:
                continue
            try:
                sentences = ast.literal_eval(row["sentence"])
            except (ValueError, SyntaxError) as exc:
                raise DatasetError(f"{where}: 'sentence' is not a list literal ({exc})") from None
            if isinstance(sentences, str):
                sentences = [sentences]
            if not isinstance(sentences, (list, tuple)) or not all(isinstance(t, str) for t in sentences):
                raise DatasetError(f"{where}: 'sentence' must be a list of strings")
            image = _checked(Path(image_root) / row["filename"], where, check_exists)
            yield CaptionRecord(image, tuple(sentences), row["split"], row["filename"], row.get("label") or None)


def _json_captions(data, where: str) -> list[str]:
    if isinstance(data, dict):
        for field in ("captions", "caption", "text", "sentences", "raw"):
            if field in data:
                return _json_captions(data[field], where)
        raise DatasetError(f"{where}: no caption/captions/text/sentences field")
    if isinstance(data, list):
        return [c for item in data for c in _json_captions(item, where)]
    if isinstance(data, str):
        return [data]
    raise DatasetError(f"{where}: caption must be a string or a list, got {type(data).__name__}")


def _record(shard: Path, key: str, parts: dict, split: str | None) -> CaptionRecord:
    where = f"{shard}: key {key!r}"
    image_ext = next((e for e in parts if "." + e in IMAGE_EXTS), None)
    if image_ext is None:
        raise MissingImageError(f"{where}: no image member ({key}.jpg/.png), found {sorted(parts)}")
    if "json" in parts:
        try:
            data = json.loads(parts["json"].decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{where}: bad JSON in {key}.json ({exc})") from None
        captions = _json_captions(data, f"{where} ({key}.json)")
        split = data.get("split", split) if isinstance(data, dict) else split
    elif "txt" in parts:
        captions = [ln for ln in parts["txt"].decode("utf-8").splitlines() if ln.strip()]
    else:
        raise DatasetError(f"{where}: no caption member ({key}.txt/.json), found {sorted(parts)}")
    return CaptionRecord(parts[image_ext], tuple(captions), split, key)


def read_tar_shards(shards: Iterable[str | Path] | str | Path, split: str | None = None) -> Iterator[CaptionRecord]:
    """Webdataset shards: members grouped by key (name up to the first dot of the base name), which must be
    consecutive as webdataset writes them. A .txt holds one caption per non-empty line."""
    shards = [shards] if isinstance(shards, (str, Path)) else list(shards)
    for shard in map(Path, shards):
        try:
            tar = tarfile.open(shard)
        except (OSError, tarfile.TarError) as exc:
            raise DatasetError(f"{shard}: not a readable tar shard ({exc})") from None
        with tar:
            key, parts, seen = None, {}, set()
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base.startswith(".") or "." not in base:
                    continue
                prefix, ext = member.name[: len(member.name) - len(base)], base.split(".", 1)
                this_key, ext = prefix + ext[0], ext[1].lower()
                if this_key != key:
                    if key is not None:
                        yield _record(shard, key, parts, split)
                    if this_key in seen:
                        raise DatasetError(f"{shard}: key {this_key!r} members are not consecutive")
                    key, parts = this_key, {}
                    seen.add(this_key)
                parts[ext] = tar.extractfile(member).read()
            if key is not None:
                yield _record(shard, key, parts, split)
