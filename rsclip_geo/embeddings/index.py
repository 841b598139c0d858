"""Scene embedding index: every valid tile encoded once, stored as GeoParquet, reused while it is fresh.

The file holds tile polygons (scene CRS), scale, row, col, valid fraction and the
embedding (float16 by default), plus metadata that identifies what produced it:
the scene (path, size, mtime, a hash of its first and last MiB), the model (name +
SHA-256 of its ONNX files) and the tiling parameters. An index whose key does not
match the current scene/model/tiling is never used: it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from affine import Affine

from ..runtime.encoder import ClipModel, load_model
from ..errors import IndexFileError, OutputError, RasterInputError
from ..runtime.paths import cache_dir
from ..raster.scene import Scene, scene_path
from .encode import encode_scene
from .key import scene_fingerprint, stale_reason, tiling_key
from ..raster.tile_stream import check_max_invalid
from ..raster.tiling import TilePlan, TileSpec, as_tile_spec
from ..outputs.geoparquet import read_json_metadata, write_geoparquet
from ..outputs.writers import atomic_path, check_output

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
INDEX_SUFFIX = ".rsclip-index.parquet"
META_KEY = b"rsclip_geo"
EMBEDDING_DTYPES = ("float16", "float32")
ROW_GROUP_ROWS = 65536  # Parquet row groups decode in parallel: a 1,000,000-tile embedding column 7.1 -> 2.7 s


class IndexNotSavedWarning(UserWarning):
    """An index (an optional cache of embeddings) could not be written; the run's results are unaffected."""


def plan_to_dict(plan: TilePlan) -> dict:
    return {"scene_width": plan.scene_width, "scene_height": plan.scene_height,
            "transform": list(plan.transform)[:6], "tile_width": plan.tile_width, "tile_height": plan.tile_height,
            "stride_x": plan.stride_x, "stride_y": plan.stride_y, "n_rows": plan.n_rows, "n_cols": plan.n_cols,
            "edge": plan.edge}


def plan_from_dict(d: dict, crs) -> TilePlan:
    return TilePlan(d["scene_width"], d["scene_height"], Affine(*d["transform"]), crs, d["tile_width"],
                    d["tile_height"], d["stride_x"], d["stride_y"], d["n_rows"], d["n_cols"], d["edge"])


@dataclass
class SceneIndex:
    """Tiles of one scene at one or more scales, with their normalised embeddings."""

    frame: "object"  # GeoDataFrame: scene, scale, tile_px, row, col, valid_frac, geometry
    embeddings: np.ndarray  # float32 [N, D], L2-normalised
    meta: dict

    @property
    def scene(self) -> str:
        return self.meta["scene"]["path"]

    @property
    def model_fingerprint(self) -> str:
        return self.meta["model"]["fingerprint"]

    @property
    def plans(self) -> list[TilePlan]:
        return [plan_from_dict(p, self.frame.crs) for p in self.meta["plans"]]

    def __len__(self) -> int:
        return len(self.frame)


SCENE_CHANGE_ATTEMPTS = 2  # a scene rewritten while it is indexed is indexed once more, then refused


def build_index(scene: str | os.PathLike, model: ClipModel | str | None = None,
                scales: Sequence[TileSpec] | None = None, max_invalid: float = 0.5,
                progress: Callable[[int, int], None] | None = None, **scene_options) -> SceneIndex:
    """Encode every valid tile of ``scene`` at each scale (default: one scale, the model's input size).

    The scene's key is taken before its pixels are read and compared after: a scene rewritten while it is
    being indexed would otherwise leave embeddings of the old pixels under the new file's key (reused later
    as fresh). It is indexed once more; if it changes again a RasterInputError says so.
    """
    scales = [as_tile_spec(s, "scales") for s in (scales or [TileSpec()])]
    scene_path(scene)
    check_max_invalid(max_invalid)
    model = model if isinstance(model, ClipModel) else load_model(model)
    for attempt in range(SCENE_CHANGE_ATTEMPTS):
        before = scene_fingerprint(scene)
        index = _build_index(scene, model, scales, max_invalid, progress, before, scene_options)
        after = scene_fingerprint(scene)
        if after == before:
            return index
        log.warning("%s: the scene file changed while it was being indexed; %s", scene,
                    "indexing it again" if attempt + 1 < SCENE_CHANGE_ATTEMPTS else "giving up")
    raise RasterInputError(
        f"{scene}: the file changed while it was being indexed ({SCENE_CHANGE_ATTEMPTS} tries); no index was "
        "made from it. Index it once nothing is writing to it")


def _build_index(scene, model: ClipModel, scales: list[TileSpec], max_invalid: float, progress,
                 fingerprint: dict, scene_options: dict) -> SceneIndex:
    import geopandas as gpd

    with Scene(scene, **scene_options) as sc:
        plans = [sc.plan(s, model.bundle.image.size) for s in scales]
        total, offset = sum(len(p) for p in plans), 0
        frames, embs = [], []
        for scale_i, plan in enumerate(plans):
            def step(done, _total, base=offset):
                if progress:
                    progress(base + done, total)
            enc = encode_scene(sc, plan, model, max_invalid, step)
            offset += len(plan)
            frames.append(gpd.GeoDataFrame({
                "scene": str(sc.path.resolve()), "scale": np.full(len(enc.tiles), scale_i, np.int16),
                "tile_px": np.full(len(enc.tiles), plan.tile_width, np.int32),
                "row": np.array([t.row for t in enc.tiles], np.int32),
                "col": np.array([t.col for t in enc.tiles], np.int32),
                "valid_frac": enc.valid_fraction}, geometry=[plan.footprint(t) for t in enc.tiles], crs=plan.crs))
            embs.append(enc.embeddings)
        frame = gpd.GeoDataFrame(pd_concat(frames), crs=plans[0].crs)
        meta = {"format": INDEX_FORMAT, "scene": fingerprint,
                "model": {"name": model.bundle.name, "fingerprint": model.fingerprint,
                          "embed_dim": model.embed_dim},
                "tiling": tiling_key(scales, scene_options, max_invalid),
                "plans": [plan_to_dict(p) for p in plans]}
    return SceneIndex(frame, np.concatenate(embs).astype(np.float32), meta)


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def write_index(index: SceneIndex, path: str | os.PathLike, overwrite: bool = False,
                dtype: str = "float16") -> Path:
    """GeoParquet with a fixed-size-list ``embedding`` column and the identifying metadata."""
    import pyarrow as pa

    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {EMBEDDING_DTYPES}, got {dtype!r}")
    path = check_output(path, overwrite, suffixes=(".parquet", ".geoparquet"))
    n, d = index.embeddings.shape
    flat = pa.array(index.embeddings.astype(dtype).reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(flat, d)
    meta = {META_KEY: json.dumps({**index.meta, "embedding_dtype": dtype}).encode()}
    with atomic_path(path, overwrite) as tmp:
        write_geoparquet(index.frame, tmp, meta, extra_columns={"embedding": embedding}, row_group_size=ROW_GROUP_ROWS)
    return path


def read_index_meta(path: str | os.PathLike) -> dict:
    """The index's key and plans (IndexFileError when the file is not an index of this format)."""
    info = read_json_metadata(path, META_KEY, "an rsclip-geo index", IndexFileError)
    if info.get("format") != INDEX_FORMAT:
        raise IndexFileError(f"{path}: index format {info.get('format')} is not {INDEX_FORMAT}; rebuild it")
    return info


def read_index(path: str | os.PathLike) -> SceneIndex:
    """The index at ``path``; IndexFileError when it is not one or its data cannot be decoded."""
    meta = read_index_meta(path)
    try:
        return _read_index_data(path, meta)
    except Exception as exc:  # a valid footer over damaged data pages: pyarrow/geopandas raise many types
        raise IndexFileError(f"{path}: index data cannot be read, the file is damaged ({type(exc).__name__}: "
                             f"{exc})") from exc


def _read_index_data(path, meta: dict) -> SceneIndex:
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = [c for c in pq.read_schema(path).names if c != "embedding"]
    frame = gpd.read_parquet(path, columns=columns)
    col = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    d = meta["model"]["embed_dim"]
    # Arrow's cast and einsum: numpy's float16 -> float32 and linalg.norm took 3.3 s + 3.7 s of a
    # 1,000,000-tile index's 15 s load; these take 1.3 s + 0.2 s.
    raw = pc.cast(col.flatten(), pa.float32()).to_numpy(zero_copy_only=False).reshape(-1, d)  # read-only view
    if len(raw) != len(frame):
        raise ValueError(f"{len(raw)} embeddings for {len(frame)} tiles")
    emb = raw / np.maximum(np.sqrt(np.einsum("ij,ij->i", raw, raw)), 1e-12)[:, None]
    return SceneIndex(frame, emb, meta)


def dir_writable(folder: Path) -> bool:
    """os.access, and the permission bits too: as root os.access says yes even for a read-only (r-x) folder."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def sidecar_path(scene: str | os.PathLike, suffix: str = INDEX_SUFFIX) -> Path:
    """``scene.tif.rsclip-index.parquet`` (or another ``suffix``) beside the scene, or in the cache when that folder
    is read-only.

    Beside the path as given: a symbolic link's sidecar goes beside the link, not beside its target (the
    target's folder is often someone else's or shared; the index key records the target file itself).
    """
    scene = Path(os.path.abspath(scene))
    beside = scene.with_name(scene.name + suffix)
    if dir_writable(scene.parent):
        return beside
    digest = hashlib.sha1(str(scene).encode()).hexdigest()[:16]
    return cache_dir() / "indexes" / f"{scene.stem}-{digest}{suffix}"


def load_or_build_index(scene: str | os.PathLike, model: ClipModel | str | None = None,
                        scales: Sequence[TileSpec] | None = None, max_invalid: float = 0.5,
                        index_path: str | os.PathLike | None = None, rebuild: bool = False,
                        progress: Callable[[int, int], None] | None = None, **scene_options) -> SceneIndex:
    """Reuse the matching index of ``scene`` (sidecar or ``index_path``), else build and save it."""
    model = model if isinstance(model, ClipModel) else load_model(model)
    scales = list(scales or [TileSpec()])
    path = Path(index_path) if index_path else sidecar_path(scene)
    tiling = tiling_key(scales, scene_options, max_invalid)
    if path.exists() and not rebuild:
        damaged = False
        try:
            reason = stale_reason(read_index_meta(path), model_fingerprint=model.fingerprint, scene=scene,
                                  tiling=tiling)
            if reason is None:
                index = read_index(path)
                log.info("reusing index %s", path)
                return index
        except IndexFileError as exc:  # truncated, or damaged data pages under a valid footer
            reason, damaged = str(exc), True
        if index_path is not None:
            raise OutputError(f"{path}: exists but cannot be reused ({reason}); remove it or choose another path")
        (log.warning if damaged else log.info)("rebuilding index %s: %s", path, reason)
    index = build_index(scene, model, scales, max_invalid, progress, **scene_options)
    save_index_cache(index, path)
    return index


def save_index_cache(index: SceneIndex, path: Path) -> bool:
    """Save ``index`` where it is reused from; it is a cache, so a full disk or a denied write is a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_index(index, path, overwrite=True)
    except OSError as exc:  # OutputError included; ENOSPC, EDQUOT, EROFS...
        log.warning("could not save index %s (%s); results are computed but the embeddings are not kept", path,
                    exc)
        warnings.warn(f"{path}: the index could not be saved ({exc}); the next run encodes the scene again",
                      IndexNotSavedWarning, stacklevel=3)
        return False
    log.info("saved index %s for reuse", path)
    return True
