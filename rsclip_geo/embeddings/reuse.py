"""Tile embeddings at given scales, taken from a scene's index where it has them, encoded otherwise.

Heatmaps and counting need the same image embeddings as search; encoding a
scene is the expensive part, so every scale whose tiling matches an existing
index (same scene file, same model weights, same band/stretch/validity options,
same ``max_invalid``, same TileSpec) is read from it. The rest is encoded once.

Writing: when no usable index exists (none at the path, or one for another
scene file or model) the embeddings are saved there so the next call reuses
them. An index that is valid for this scene and model but tiled differently
(e.g. a search index at other scales) is never overwritten. A file named by the caller
(``index_path``) that cannot be reused is refused, as search does, unless ``replace_index``:
it may be someone else's index, or no index at all.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..runtime.encoder import ClipModel
from ..errors import IndexFileError, OutputError
from .index import SceneIndex, build_index, read_index, read_index_meta, save_index_cache, sidecar_path
from .key import stale_reason, tiling_key, usable_scales
from ..raster.scene import Scene
from .encode import encode_scene
from ..raster.tiling import Tile, TilePlan, TileSpec

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class ScaleEmbeddings:
    """Valid tiles of one scale with their embeddings; ``reused`` says whether they came from an index."""

    spec: TileSpec
    plan: TilePlan
    tiles: list[Tile]
    embeddings: np.ndarray  # float32 [N, D], L2-normalised
    valid_fraction: np.ndarray  # float32 [N]
    reused: bool

    @property
    def skipped(self) -> int:
        return len(self.plan) - len(self.tiles)


def _usable_scales(meta: dict, scene_path: Path, model: ClipModel, specs: Sequence[TileSpec], scene_options: dict,
                   max_invalid: float) -> tuple[dict[int, int], str | None]:
    """{our scale -> index scale} for the scales the index can provide, and why it is unusable as a whole."""
    reason = stale_reason(meta, model_fingerprint=model.fingerprint, scene=scene_path,
                          tiling=tiling_key(specs, scene_options, max_invalid),
                          tiling_parts=("scene_options", "max_invalid"))
    return ({}, reason) if reason else (usable_scales(meta, specs), None)


def _from_index(index: SceneIndex, scale: int, spec: TileSpec) -> ScaleEmbeddings:
    plan = index.plans[scale]
    sel = np.flatnonzero(index.frame["scale"].to_numpy() == scale)
    rows, cols = index.frame["row"].to_numpy()[sel], index.frame["col"].to_numpy()[sel]
    tiles = [plan.tile(int(r), int(c)) for r, c in zip(rows, cols)]
    return ScaleEmbeddings(spec, plan, tiles, index.embeddings[sel], index.frame["valid_frac"].to_numpy()[sel]
                           .astype(np.float32), True)


def _encode(scene: Scene, spec: TileSpec, model: ClipModel, max_invalid: float, progress, base: int, total: int
            ) -> ScaleEmbeddings:
    plan = scene.plan(spec, model.bundle.image.size)

    def step(done, _total):
        if progress:
            progress(base + done, total)
    enc = encode_scene(scene, plan, model, max_invalid, step)
    return ScaleEmbeddings(spec, plan, enc.tiles, enc.embeddings, enc.valid_fraction, False)


def scale_embeddings(scene: Scene, specs: Sequence[TileSpec], model: ClipModel, max_invalid: float = 0.5,
                     scene_options: dict | None = None, use_index: bool = True,
                     index_path: str | os.PathLike | None = None, save_index: bool = True,
                     progress: ProgressCallback | None = None, replace_index: bool = False) -> list[ScaleEmbeddings]:
    """Embeddings of every valid tile at each of ``specs`` for the opened ``scene`` (see module docstring).

    ``scene_options`` are the options ``scene`` was opened with (they are part of an index's key);
    ``use_index=False`` neither reads nor writes an index. An ``index_path`` that exists but cannot be reused is
    an OutputError unless ``replace_index`` (the sidecar is ours and is replaced freely).
    """
    scene_options = dict(scene_options or {})
    specs = list(specs)
    out: list[ScaleEmbeddings | None] = [None] * len(specs)
    path = Path(index_path) if index_path else sidecar_path(scene.path)
    may_write = use_index and save_index
    if use_index and path.exists():
        try:
            found, reason = _usable_scales(read_index_meta(path), scene.path, model, specs, scene_options, max_invalid)
        except IndexFileError as exc:
            found, reason = {}, str(exc)
        if found:
            try:
                index = read_index(path)
            except IndexFileError as exc:  # damaged data pages under a valid footer: replaced like a truncated file
                log.warning("index %s not reused: %s", path, exc)
                found, reason = {}, str(exc)
            for ours, theirs in found.items():
                out[ours] = _from_index(index, theirs, specs[ours])
            if found:
                log.info("reused %d of %d scale(s) from index %s", len(found), len(specs), path)
        # an index that is right for this scene and model is kept, whatever its tiling
        may_write = may_write and reason is not None and not found
        if reason and may_write and index_path is not None and not replace_index:
            raise OutputError(f"{path}: exists but cannot be reused ({reason}); not replaced: remove it, choose "
                              "another path, or pass --overwrite (replace_index=True)")
        if reason:
            log.info("index %s not reused: %s", path, reason)
    missing = [i for i, e in enumerate(out) if e is None]
    if missing and may_write and len(missing) == len(specs):
        index = build_index(scene.path, model, specs, max_invalid, progress, **scene_options)
        save_index_cache(index, path)
        return [replace(_from_index(index, i, s), reused=False) for i, s in enumerate(specs)]
    plans_total = 0
    if missing:
        plans_total = sum(len(scene.plan(specs[i], model.bundle.image.size)) for i in missing)
    base = 0
    for i in missing:
        out[i] = _encode(scene, specs[i], model, max_invalid, progress, base, plans_total)
        base += len(out[i].plan)
    return out  # type: ignore[return-value]
