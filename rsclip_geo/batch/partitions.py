"""The batch output folder: one GeoParquet partition per scene, and whether it is finished.

Each scene is written (atomically) to ``OUT_DIR/<name>-<hash>.parquet``. A partition counts
as finished only when its metadata matches the scene file (``scene_fingerprint``), the model
weights (``bundle_fingerprint``) and every parameter (``tiling_key`` plus dtype / labels);
finished scenes are skipped, stale ones rebuilt. Index partitions are ordinary scene indexes;
classification partitions carry their own metadata key, defined here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .collection import SceneRef
from ..errors import OutputError, RsclipError
from ..embeddings.index import INDEX_FORMAT, build_index, plan_to_dict, read_index_meta, write_index
from ..embeddings.key import scene_fingerprint, stale_reason, tiling_key
from ..outputs.geoparquet import read_json_metadata, write_geoparquet

if TYPE_CHECKING:
    from .plan import SceneJob
    from ..runtime.encoder import ClipModel

CLASSIFY_META_KEY = b"rsclip_geo_classify"
CLASSIFY_FORMAT = 1
PARTITION_SUFFIX = ".parquet"


# ---- where ----------------------------------------------------------------------------
def partition_path(out_dir: str | os.PathLike, scene: SceneRef) -> Path:
    return Path(out_dir) / f"{scene.key}{PARTITION_SUFFIX}"


def partition_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The partition files in ``folder`` (hidden files, e.g. unfinished atomic writes, left out), sorted."""
    folder = Path(folder)
    found = folder.rglob(f"*{PARTITION_SUFFIX}") if recursive else folder.glob(f"*{PARTITION_SUFFIX}")
    return sorted(p for p in found if not p.name.startswith("."))


# ---- finished or not --------------------------------------------------------------
def _expected(job: SceneJob) -> dict:
    """The metadata fields (besides the scene fingerprint) an up-to-date partition carries."""
    p = job.params
    if job.kind == "index":
        return {"tiling": tiling_key(p["scales"], p["scene_options"], p["max_invalid"]),
                "embedding_dtype": p["dtype"]}
    return {"tiling": tiling_key([p["tile"]], p["scene_options"], p["max_invalid"]), "params": _classify_params(p)}


def _classify_params(p: dict) -> dict:
    return {"labels": [[lab.name, list(lab.prompts) if lab.prompts else None] for lab in p["labels"]],
            "templates": list(p["templates"]) if p["templates"] else None,
            "top_k": p["top_k"], "min_score": p["min_score"]}


def _json(x):
    return json.loads(json.dumps(x))


def read_partition_meta(path: str | os.PathLike, kind: str) -> dict:
    """The identifying metadata of an index or classification partition (raises RsclipError if it is neither)."""
    if kind == "index":
        return read_index_meta(path)
    info = read_json_metadata(path, CLASSIFY_META_KEY, "an rsclip-geo classification partition", OutputError)
    if info.get("format") != CLASSIFY_FORMAT:
        raise OutputError(f"{path}: classification format {info.get('format')} is not {CLASSIFY_FORMAT}")
    return info


def partition_stale_reason(meta: dict, job: SceneJob) -> str | None:
    """Why an existing partition is not this job's result for its scene (None: finished)."""
    expected = _expected(job)
    reason = stale_reason(meta, model_fingerprint=job.model.fingerprint, scene=job.scene.path,
                          tiling=expected.pop("tiling"))
    if reason:
        return reason
    for key, want in expected.items():
        if _json(meta.get(key)) != _json(want):
            return {"embedding_dtype": "the embedding dtype differs",
                    "params": "the labels or scoring parameters differ"}.get(key, f"{key} differs")
    return None


def build_reason(job: SceneJob) -> tuple[str | None, bool]:
    """(why to build, or None when finished; whether the existing file may be replaced)."""
    out = Path(job.output)
    if not out.exists():
        return "new", False
    try:
        meta = read_partition_meta(out, job.kind)
    except RsclipError as exc:
        if job.overwrite:
            return "replacing a file that is not a partition", True
        what = "an index" if job.kind == "index" else "a classification"
        raise OutputError(f"{out}: exists but is not {what} partition ({exc}); remove it or pass "
                          "--overwrite") from exc
    if job.rebuild:
        return "rebuild requested", True
    reason = partition_stale_reason(meta, job)
    return reason, reason is not None


# ---- writing -----------------------------------------------------------------------
def write_partition(job: SceneJob, model: ClipModel, overwrite: bool) -> int:
    """Encode the job's scene with ``model`` and write its partition; -> the number of tiles written."""
    writer = _write_index if job.kind == "index" else _write_classification
    return writer(job, model, overwrite)


def _batch_meta(job: SceneJob) -> dict:
    return {"name": job.scene.name, "asset": job.scene.asset}


def _write_index(job: SceneJob, model: ClipModel, overwrite: bool) -> int:
    p = job.params
    index = build_index(job.scene.path, model, p["scales"], p["max_invalid"], **p["scene_options"])
    index.meta["batch"] = _batch_meta(job)
    write_index(index, job.output, overwrite=overwrite, dtype=p["dtype"])
    return len(index)


def _write_classification(job: SceneJob, model: ClipModel, overwrite: bool) -> int:
    from ..tasks.classify import tile_classify
    from ..outputs.writers import atomic_path, check_output

    p = job.params
    check_output(job.output, overwrite, suffixes=(PARTITION_SUFFIX,))
    result = tile_classify(job.scene.path, p["labels"], model, tile=p["tile"], top_k=p["top_k"],
                           min_score=p["min_score"], max_invalid=p["max_invalid"], templates=p["templates"],
                           **p["scene_options"])
    plan, summary = result.plan, result.summary
    frame = result.frame.copy()
    frame.insert(0, "scene", str(job.scene.path))
    meta = {"format": CLASSIFY_FORMAT, "kind": "tile-classify", "scene": scene_fingerprint(job.scene.path),
            "model": {"name": model.bundle.name, "fingerprint": job.model.fingerprint, "embed_dim": model.embed_dim},
            **_expected(job), "plan": plan_to_dict(plan), "index_format": INDEX_FORMAT,
            "tiles": {"total": summary.tiles_total, "labelled": summary.tiles_encoded,
                      "skipped": summary.tiles_skipped}, "batch": _batch_meta(job)}
    with atomic_path(job.output, overwrite) as tmp:
        write_geoparquet(frame, tmp, {CLASSIFY_META_KEY: json.dumps(meta).encode()})
    return len(frame)
