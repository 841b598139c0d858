"""Write a caption set as RSICD / RSITMD / UCM-captions do (Karpathy JSON), plus the set's info.json.

Layout of one image entry: {"filename", "filepath", "imgid", "split", "sentids", "sentences": [{"raw",
"tokens", "imgid", "sentid"}]} and any extra fields of the item (source window, class, ...). Both readers
(rsclip_geo.evaluation.datasets.read_captions and training.data.readers.read_karpathy_json) find the image
at <json folder>/<filepath>/<filename>.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from training.data.errors import DatasetError

_TOKEN = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Item:
    """One image of a caption set: its file under the set folder and its captions."""

    filepath: str  # folder relative to the set folder, '/'-separated
    filename: str
    captions: tuple[str, ...]
    split: str = "test"
    extra: dict = field(default_factory=dict)


def tokens(text: str) -> list[str]:
    """RSICD-style lower-case word tokens (punctuation dropped)."""
    return _TOKEN.findall(text.lower())


def karpathy_json(items: Sequence[Item], dataset: str) -> dict:
    """The JSON object; image and sentence ids count up in item order."""
    images, sentid = [], 0
    for imgid, item in enumerate(items):
        if not item.captions:
            raise DatasetError(f"{item.filepath}/{item.filename}: no captions")
        sentences = []
        for raw in item.captions:
            sentences.append({"raw": raw, "tokens": tokens(raw), "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filename": item.filename, "filepath": item.filepath, "imgid": imgid, "split": item.split,
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences, **item.extra})
    return {"dataset": dataset, "images": images}


def write_karpathy(path: Path, items: Sequence[Item], dataset: str) -> Path:
    """Write the caption file; every item's image must already exist in the set folder."""
    path = Path(path)
    missing = [f"{it.filepath}/{it.filename}" for it in items
               if not (path.parent / it.filepath / it.filename).is_file()]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} image(s) not written, e.g. {missing[0]}")
    path.write_text(json.dumps(karpathy_json(items, dataset), indent=1) + "\n", encoding="utf-8")
    return path


def write_info(path: Path, info: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def prepare_out(out: Path, data_dir: Path) -> Path:
    """Create an empty output folder; refuse one inside the (read-only) data folder or one already in use."""
    out, data_dir = Path(out).resolve(), Path(data_dir).resolve()
    if out == data_dir or data_dir in out.parents:
        raise DatasetError(f"{out}: output folder is inside the data folder {data_dir}; write elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out}: output folder exists and is not empty; choose a new folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    return out
