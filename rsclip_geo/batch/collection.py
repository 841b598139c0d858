"""A collection of scenes for one batch job: a folder, a list file of paths, or a STAC JSON file on disk.

Everything is resolved to local, existing files up front, so a typo in a list or
an item without a usable raster asset is named before any work starts. Such
entries are *problems*: ``strict=True`` raises one error that lists them all; the
batch runner reads leniently and reports them as failed scenes instead, so one
bad entry never stops a long job.

Relative paths (list lines, STAC hrefs) are resolved against the folder of the
file that names them, so a collection file travels with its data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from ..errors import DatasetError

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg")
JSON_SUFFIXES = (".json", ".geojson")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SceneRef:
    """One scene of a collection: a local raster file and the name it is reported under."""

    path: Path  # absolute
    name: str  # STAC item id, or the file name
    asset: str | None = None  # the STAC asset key it came from

    @property
    def key(self) -> str:
        """File-name-safe, unique per file: ``<name>-<hash of the resolved path>``."""
        base = self.name[:-len(Path(self.name).suffix)] if Path(self.name).suffix.lower() in RASTER_SUFFIXES \
            else self.name
        safe = _UNSAFE.sub("_", base).strip("._")[:80] or "scene"
        digest = hashlib.sha1(str(self.path).encode()).hexdigest()[:10]
        return f"{safe}-{digest}"


@dataclass(frozen=True)
class Problem:
    """An entry that names no usable local raster (missing file, no raster asset, remote href)."""

    name: str
    message: str


@dataclass
class Collection:
    scenes: list[SceneRef]
    problems: list[Problem] = field(default_factory=list)
    source: str = ""
    stac: bool = False

    def __len__(self) -> int:
        return len(self.scenes)

    def check(self) -> "Collection":
        """Raise one DatasetError naming every problem (none: return self)."""
        if self.problems:
            lines = "\n".join(f"  {p.name}: {p.message}" for p in self.problems)
            raise DatasetError(f"{self.source}: {len(self.problems)} unusable entr"
                               f"{'y' if len(self.problems) == 1 else 'ies'}:\n{lines}")
        return self


def read_collection(source: str | os.PathLike | Sequence[str | os.PathLike] | Collection, asset: str | None = None,
                    recursive: bool = False, strict: bool = True) -> Collection:
    """Scenes of ``source``: a folder of rasters, a list file (one path a line), a STAC ItemCollection /
    FeatureCollection / Item JSON, a single raster, or a Python list of raster paths; a Collection is
    returned as it is (``asset`` and ``recursive`` do not apply to it).

    ``asset``: the STAC asset key to use (default: each item's first GeoTIFF asset).
    ``strict``: raise on missing files and unusable items instead of returning them as ``problems``.
    """
    if isinstance(source, Collection):
        return source.check() if strict else source
    if isinstance(source, (list, tuple)):
        coll = _from_paths([(str(p), None) for p in source], Path.cwd(), "list of scenes")
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DatasetError(f"{path}: collection does not exist "
                               "(expected a folder, a list file or a STAC JSON file)")
        if path.is_dir():
            coll = _from_folder(path, recursive)
        elif path.suffix.lower() in RASTER_SUFFIXES:
            coll = Collection([SceneRef(path.resolve(), path.name)], source=str(path))
        elif path.suffix.lower() in JSON_SUFFIXES or _looks_like_json(path):
            coll = read_stac(path, asset)
        else:
            coll = _from_list_file(path)
    if asset is not None and not coll.stac:
        raise DatasetError(f"{coll.source}: an asset key ({asset!r}) only applies to a STAC JSON collection")
    coll.scenes = _dedupe(coll.scenes)
    if not coll.scenes and not coll.problems:
        raise DatasetError(f"{coll.source}: the collection holds no scenes")
    return coll.check() if strict else coll


def _looks_like_json(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4096).lstrip().startswith(b"{")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the collection file ({exc})") from exc


def _dedupe(scenes: Iterable[SceneRef]) -> list[SceneRef]:
    """The same file twice would be two tasks writing one output: keep the first."""
    seen, out = set(), []
    for s in scenes:
        if s.path in seen:
            log.warning("%s appears more than once in the collection; processed once", s.path)
            continue
        seen.add(s.path)
        out.append(s)
    return out


def _from_folder(folder: Path, recursive: bool) -> Collection:
    files = folder.rglob("*") if recursive else folder.iterdir()
    scenes = [SceneRef(p.resolve(), str(p.relative_to(folder))) for p in sorted(files)
              if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES and not p.name.startswith(".")]
    if not scenes:
        raise DatasetError(f"{folder}: no rasters ({', '.join(RASTER_SUFFIXES)}) in this folder"
                           + ("" if recursive else " (subfolders are not searched; use --recursive)"))
    return Collection(scenes, source=str(folder))


def _from_list_file(path: Path) -> Collection:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the list file ({exc})") from exc
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):  # blank lines and '#' comment lines are ignored
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((line, f"{path.name} line {lineno}"))
    return _from_paths(entries, path.parent, str(path))


def _from_paths(entries: Sequence[tuple[str, str | None]], base: Path, source: str) -> Collection:
    scenes, problems = [], []
    for raw, where in entries:
        p = Path(raw).expanduser()
        p = p if p.is_absolute() else base / p
        at = f" ({where})" if where else ""
        if not p.exists():
            problems.append(Problem(raw, f"file does not exist: {p}{at}"))
        elif p.is_dir():
            problems.append(Problem(raw, f"is a folder, not a raster{at}"))
        else:
            scenes.append(SceneRef(p.resolve(), p.name))
    return Collection(scenes, problems, source)


# ---- STAC -------------------------------------------------------------------
def read_stac(path: str | os.PathLike, asset: str | None = None) -> Collection:
    """Items of a STAC ItemCollection / GeoJSON FeatureCollection (or a single Item) with local hrefs."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable JSON file ({exc})") from exc
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "FeatureCollection":
        items = doc.get("features")
        if not isinstance(items, list):
            raise DatasetError(f"{path}: a FeatureCollection without a 'features' list")
    elif kind == "Feature":
        items = [doc]
    elif kind in ("Collection", "Catalog"):
        raise DatasetError(f"{path}: a STAC {kind}, not an ItemCollection; save the items (e.g. the result of a "
                           "STAC API search) as a FeatureCollection JSON and pass that")
    else:
        raise DatasetError(f"{path}: field 'type' is {kind!r}; expected a STAC ItemCollection ('FeatureCollection') "
                           "or an Item ('Feature')")
    scenes, problems = [], []
    for i, item in enumerate(items):
        name = str(item.get("id") or f"feature {i}") if isinstance(item, dict) else f"feature {i}"
        try:
            key, href = _pick_asset(item, asset)
            scenes.append(SceneRef(_local_path(href, path.parent, name, key), name, key))
        except DatasetError as exc:
            problems.append(Problem(name, str(exc)))
    return Collection(scenes, problems, str(path), stac=True)


def _is_geotiff(asset: dict) -> bool:
    media = str(asset.get("type") or "").lower()
    if media:
        return media.startswith("image/tiff") or "geotiff" in media
    return Path(urlparse(str(asset.get("href", ""))).path).suffix.lower() in GEOTIFF_SUFFIXES


def _pick_asset(item, key: str | None) -> tuple[str, str]:
    assets = item.get("assets") if isinstance(item, dict) else None
    if not isinstance(assets, dict) or not assets:
        raise DatasetError("item has no 'assets'")
    if key is not None:
        if key not in assets:
            raise DatasetError(f"no asset {key!r} (assets: {', '.join(assets)})")
        chosen = key
    else:
        chosen = next((k for k, a in assets.items() if isinstance(a, dict) and _is_geotiff(a)), None)
        if chosen is None:
            raise DatasetError(f"no GeoTIFF asset (assets: {', '.join(assets)}); choose one with --asset KEY")
    href = assets[chosen].get("href") if isinstance(assets[chosen], dict) else None
    if not href:
        raise DatasetError(f"asset {chosen!r} has no 'href'")
    return chosen, str(href)


def _local_path(href: str, base: Path, name: str, key: str) -> Path:
    parsed = urlparse(href)
    if parsed.scheme == "file":
        p = Path(url2pathname(unquote(parsed.path)))
    elif parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise DatasetError(f"asset {key!r} href {href!r} is not a local file; download the data and point the "
                           "hrefs at the local copies")
    else:
        p = Path(href).expanduser()
        p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise DatasetError(f"asset {key!r}: file does not exist ({p})")
    return p.resolve()
