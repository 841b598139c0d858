"""Outputs never land on inputs: one check every command runs before any work.

``--overwrite`` allows replacing an old output, never a file the run reads: an output that
resolves to an input (the same path, a symlink or hard link to it, a path through a
symlinked folder) is refused whatever the flags, and so are two outputs that are one file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import OutputError

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg", ".gpkg")
INDEX_SUFFIXES = (".parquet", ".geoparquet")

PathLike = str | os.PathLike


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.samefile(a, b):  # hard links, symlinks
            return True
    except OSError:  # one of them does not exist (yet)
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _files_in_spec(spec: str) -> list[str]:
    """The local files a GDAL dataset name refers to: a path, 'DRIVER:path[:layer]', '/vsizip/a.zip/b.tif'."""
    if os.path.exists(spec):
        return [spec]
    found = [spec]  # not there yet (a cache this run will write): the name itself
    rest = spec
    while rest.startswith("/vsi") and "/" in rest[1:]:  # /vsizip/, /vsigzip/, chained prefixes
        rest = rest[rest.index("/", 1):]
        if rest.startswith("//"):
            rest = rest[1:]
    parts = rest.split("/")
    for i in range(len(parts), 1, -1):  # the archive inside a /vsi path
        head = "/".join(parts[:i])
        if os.path.isfile(head):
            found.append(head)
            break
    pieces = spec.split(":")
    for i in range(len(pieces)):  # DRIVER:path:layer (a path may itself hold ':')
        for j in range(i + 1, len(pieces) + 1):
            candidate = ":".join(pieces[i:j]).strip('"')
            if candidate and candidate != spec and os.path.isfile(candidate):
                found.append(candidate)
    return found


def _is_index_file(path: str) -> bool:
    from ..embeddings.index import META_KEY
    from .geoparquet import has_metadata_key

    return has_metadata_key(path, META_KEY, unreadable=False)  # not Parquet: not an index


def _read_from_folder(folder: str, output: str) -> bool:
    """Whether ``output`` is a file a folder source is read for: a raster or an index inside it."""
    real_out, real_dir = os.path.realpath(output), os.path.realpath(folder)
    if not os.path.isfile(output) or os.path.commonpath([real_out, real_dir]) != real_dir:
        return False
    suffix = Path(output).suffix.lower()
    return suffix in RASTER_SUFFIXES or (suffix in INDEX_SUFFIXES and _is_index_file(output))


def check_outputs_apart(outputs: Mapping[str, PathLike | None], inputs: Iterable[PathLike | None]) -> None:
    """Refuse (OutputError) any output that is an input, or that another output also names.

    ``outputs``: option name (e.g. '--raster') -> path or None (not asked for). ``inputs``: the files the run
    reads (scenes as given to GDAL, labels files, index files, folders of them); None entries are ignored.
    """
    given = [(opt, os.fspath(p)) for opt, p in outputs.items() if p is not None and os.fspath(p) != ""]
    sources = [os.fspath(p) for p in inputs if p is not None]
    for opt, out in given:
        for src in sources:
            if os.path.isdir(src):
                if _read_from_folder(src, out):
                    raise OutputError(f"{out} ({opt}): is an input of this run (read from the folder {src}); "
                                      "refusing to write over an input, whatever --overwrite says")
                continue
            for file in _files_in_spec(src):
                if _same_file(out, file):
                    same = "" if os.path.abspath(out) == os.path.abspath(file) else f" (the same file as {file})"
                    raise OutputError(f"{out} ({opt}): is the input {src}{same}; refusing to write over an input, "
                                      "whatever --overwrite says")
    for i, (opt_a, a) in enumerate(given):
        for opt_b, b in given[i + 1:]:
            if _same_file(a, b):
                raise OutputError(f"{a} ({opt_a}) and {b} ({opt_b}) are the same file; give them different paths")


def scene_caches(scenes: Iterable[PathLike | None]) -> list[Path]:
    """The caches a run reads and may rewrite for each scene file (its sidecar index, its dense cells): inputs too,
    so no output may be written over them (an -o aimed at one was written after the run had just rebuilt it)."""
    from ..embeddings.dense_cells import DENSE_SUFFIX
    from ..embeddings.index import sidecar_path

    caches: list[Path] = []
    for scene in scenes:
        if scene is None or not os.path.isfile(scene) or Path(scene).suffix.lower() in INDEX_SUFFIXES:
            continue
        dense = sidecar_path(scene, DENSE_SUFFIX)
        caches += [sidecar_path(scene), dense, dense.with_suffix(".json")]
    return caches


def model_files(model) -> list[Path]:
    """The files a loaded model was read from (model.json, encoders, tokenizer): inputs of every run."""
    bundle = getattr(model, "bundle", None)
    if bundle is None:
        return []
    return [bundle.root / "model.json", bundle.image_encoder_path, bundle.text_encoder_path, bundle.tokenizer_path]
