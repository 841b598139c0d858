"""What stored embeddings were made from, and the one rule deciding whether they are still valid.

Indexes (sidecar or named), the scales heatmap/count reuse from them, batch partitions and searched index
files all carry the same key in their metadata: the scene file's fingerprint, the model's weight fingerprint
and the tiling (scales, scene options, ``max_invalid``). ``stale_reason`` compares a stored key with the
wanted one and says, in words a user can act on, why the embeddings cannot be used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict
from typing import Sequence

from ..raster.scene import Scene, scene_path
from ..runtime.encoder import split_rotations
from ..raster.tile_stream import check_max_invalid
from ..raster.tiling import TileSpec, as_tile_spec

# The parts of a tiling key, and what a mismatch in each means to a user.
TILING_PARTS = {"scales": "the tile sizes/overlaps differ", "scene_options": "band/stretch/validity options differ",
                "max_invalid": "max_invalid differs"}


def scene_fingerprint(path: str | os.PathLike) -> dict:
    """Cheap identity of a scene file: resolved path, size, mtime, ctime and a hash of its first and last MiB.

    A rewrite that keeps size and mtime (pixels edited in place, mtime restored with ``touch -r``) still changes
    ctime on POSIX; on Windows st_ctime is the creation time, so there only size/mtime/hash count.
    """
    path = scene_path(path).resolve()
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "sha1_head_tail": sha1_head_tail(path, st.st_size)}


def sha1_head_tail(path: str | os.PathLike, size: int | None = None) -> str:
    """SHA-1 of a file's first and last MiB: cheap evidence that a large file is the one recorded."""
    size = os.path.getsize(path) if size is None else size
    h = hashlib.sha1()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()


def normalized_scene_options(options: dict) -> dict:
    """Scene options with Scene's defaults filled in, JSON-normalised, so {} and the CLI's explicit defaults match."""
    defaults = {k: p.default for k, p in inspect.signature(Scene.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown scene option(s): {', '.join(sorted(unknown))} (known: {', '.join(defaults)})")
    full = {**defaults, **options}
    return _json({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(full.items())})


def tiling_key(scales: Sequence[TileSpec], scene_options: dict, max_invalid: float) -> dict:
    """The tiling part of the key: every TileSpec, the normalised scene options and ``max_invalid``."""
    return {"scales": [asdict(as_tile_spec(s, "scales")) for s in scales],
            "scene_options": normalized_scene_options(scene_options), "max_invalid": check_max_invalid(max_invalid)}


def _json(x):
    return json.loads(json.dumps(x))


def _stored_scene_options(tiling: dict):
    try:
        return normalized_scene_options(tiling.get("scene_options") or {})
    except TypeError:  # written by a version with options this one does not know
        return None


def stale_reason(meta: dict, *, model_fingerprint: str, scene: str | os.PathLike | None = None,
                 tiling: dict | None = None, tiling_parts: Sequence[str] = tuple(TILING_PARTS)) -> str | None:
    """Why embeddings stored with ``meta`` are not the wanted ones (None: they are).

    ``scene``: the scene file they must come from (None: any, e.g. searching an index file on its own).
    ``tiling``: a ``tiling_key`` they must match in ``tiling_parts`` (heatmap and count reuse an index at any
    of its scales, so they compare only the options, then pick the scales themselves).
    """
    if scene is not None and meta.get("scene") != scene_fingerprint(scene):
        return "the scene file changed"
    stored_model = meta.get("model") or {}
    stored_fingerprint = str(stored_model.get("fingerprint"))
    if stored_fingerprint != model_fingerprint:
        (stored_weights, stored_turns), (weights, turns) = map(split_rotations, (stored_fingerprint, model_fingerprint))
        if stored_weights == weights:
            return f"it was built with --rotations {stored_turns}, this run uses --rotations {turns}"
        return f"it was built with model {stored_model.get('name')!r} (other weights)"
    if tiling is not None:
        stored = meta.get("tiling") or {}
        for part in tiling_parts:
            if part == "scene_options":
                same = _stored_scene_options(stored) == normalized_scene_options(tiling["scene_options"])
            else:
                same = _json(stored.get(part)) == _json(tiling[part])
            if not same:
                return TILING_PARTS[part]
    return None


def usable_scales(meta: dict, specs: Sequence[TileSpec]) -> dict[int, int]:
    """{wanted scale -> stored scale} for the TileSpecs the stored tiling has (after ``stale_reason`` passed)."""
    theirs = [_json(s) for s in (meta.get("tiling") or {}).get("scales", [])]
    wanted = [_json(asdict(as_tile_spec(s, "scales"))) for s in specs]
    return {i: theirs.index(w) for i, w in enumerate(wanted) if w in theirs}
