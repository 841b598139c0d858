"""Many scenes as one resumable job: index or classify a collection, on Dask or in-process.

The public entry points. Each scene is one task (``scene_task``) that writes one GeoParquet
partition (``partitions``: layout, finished-or-not, writers), planned on the client as plain
data (``batch_plan``) and reported per scene (``batch_report``). Workers load the model once
per process (``worker_model``) and verify its fingerprint: every machine must see the same
bundle, scenes and OUT_DIR (a shared file system). Dask is optional and imported only when a
cluster is asked for (``dask_client``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Sequence

from .plan import KINDS, SceneJob, model_spec, plan_jobs, prepare_out_dir
from .report import BatchSummary, ProgressCallback, SceneResult, problems_as_results
from .collection import read_collection
from .dask_client import CLUSTER_HINT, check_workers, open_client, threads_by_worker
from ..runtime.encoder import ClipModel
from ..errors import OptionError, OutputError
from ..embeddings.key import normalized_scene_options
from .partitions import (CLASSIFY_FORMAT, CLASSIFY_META_KEY, PARTITION_SUFFIX, partition_files, partition_path,
                         partition_stale_reason, read_partition_meta)
from ..runtime.prompts import Label, parse_labels
from .scene_task import run_job, run_scene
from ..raster.tiling import TileSpec
from .worker_model import ModelCache, ModelSpec, model_load_count

__all__ = ["KINDS", "CLASSIFY_META_KEY", "CLASSIFY_FORMAT", "PARTITION_SUFFIX", "CLUSTER_HINT", "ProgressCallback",
           "ModelSpec", "SceneJob", "SceneResult", "BatchSummary", "ModelCache", "model_load_count",
           "read_partition_meta", "partition_stale_reason", "run_scene", "partition_path", "plan_jobs",
           "threads_by_worker", "run_jobs", "batch_index", "batch_classify", "read_classification"]

log = logging.getLogger(__name__)


# ---- running -------------------------------------------------------------------------
def run_jobs(jobs: Sequence[SceneJob], client=None, workers: int | None = None, scheduler: str | None = None,
             progress: ProgressCallback | None = None, model: ClipModel | None = None) -> tuple[list[SceneResult], int]:
    """Run ``jobs`` on ``client``, a new LocalCluster of ``workers`` processes, the cluster at ``scheduler``,
    or sequentially in this process (``model``: an already loaded model to use there). -> (results, workers)."""
    if client is None and workers is None and scheduler is None:
        cache = ModelCache(verify=False)  # the plan hashed these very files a moment ago, in this process
        if model is not None and jobs:
            cache.put(jobs[0].model, model)
        results = []
        for i, job in enumerate(jobs):
            results.append(run_job(job, cache))
            if progress:
                progress(results[-1], i + 1, len(jobs))
        return results, 1
    with open_client(client, workers, scheduler) as client:
        return _run_on(client, jobs, progress)


def _run_on(client, jobs: Sequence[SceneJob], progress) -> tuple[list[SceneResult], int]:
    from distributed import as_completed

    n_workers = len(client.nthreads())
    if not jobs:
        return [], n_workers
    if jobs[0].model.threads is None:  # one mapping for the whole job, computed once
        mapping = tuple(sorted(threads_by_worker(client).items()))
        jobs = [replace(j, model=replace(j.model, threads_by_worker=mapping)) for j in jobs]
    futures = client.map(run_scene, jobs, pure=False)
    position = {f.key: i for i, f in enumerate(futures)}
    results: list[SceneResult | None] = [None] * len(jobs)
    try:
        for n, future in enumerate(as_completed(futures), 1):
            i = position[future.key]
            try:
                results[i] = future.result()
            except Exception as exc:  # the task itself never raises: a worker died, or the job did not pickle
                job = jobs[i]
                results[i] = SceneResult(job.scene.name, str(job.scene.path), job.output, "failed",
                                         f"task lost on the cluster ({type(exc).__name__}: {exc})")
            if progress:
                progress(results[i], n, len(jobs))
    finally:
        client.cancel([f for f in futures if not f.done()])
    return results, n_workers


# ---- the two jobs -----------------------------------------------------------------------
def _run_batch(kind, collection, out_dir, model, params, *, asset, recursive, strict, client, workers, scheduler,
               device, threads, batch_size, rotations, rebuild, overwrite, progress) -> BatchSummary:
    start = time.perf_counter()
    coll = read_collection(collection, asset=asset, recursive=recursive, strict=strict)
    spec, loaded = model_spec(model, device, threads, batch_size, rotations)  # before OUT_DIR is made
    if client is None and scheduler is None:
        check_workers(workers)
    out = prepare_out_dir(out_dir)
    jobs, extra = plan_jobs(kind, coll, out, spec, params, rebuild, overwrite)
    log.info("batch %s: %d scenes -> %s", kind, len(jobs), out)
    results, n_workers = run_jobs(jobs, client, workers, scheduler, progress, loaded)
    return BatchSummary(kind, str(out), results + problems_as_results(coll), extra,
                        time.perf_counter() - start, n_workers)


def batch_index(collection, out_dir: str | os.PathLike, model: ClipModel | str | os.PathLike | None = None,
                scales: Sequence[TileSpec] | None = None, max_invalid: float = 0.5, dtype: str = "float16", *,
                asset: str | None = None, recursive: bool = False, strict: bool = False, client=None,
                workers: int | None = None, scheduler: str | None = None, device: str = "auto",
                threads: int | None = None, batch_size: int = 32, rotations: int | None = None, rebuild: bool = False,
                overwrite: bool = False, progress: ProgressCallback | None = None, **scene_options) -> BatchSummary:
    """Index every scene of ``collection`` into ``out_dir`` (one partition per scene, readable by search).

    ``collection``: folder / list file / STAC JSON path, list of paths, or a Collection. ``model``: a bundle
    name or path the workers load (a ClipModel is used as is when running in-process). ``client`` (a
    ``distributed.Client``), ``workers`` (a new LocalCluster) or ``scheduler`` (an address); none: in-process.
    ``rotations``: the rotation ensemble (1, 2, 4; None: a loaded model's own, else 1).
    """
    if dtype not in ("float16", "float32"):
        raise OptionError(f"embedding dtype must be float16 or float32, got {dtype!r}")
    # every Scene option, defaults filled in: the API and the CLI then agree on when a partition is finished
    params = {"scales": list(scales or [TileSpec()]), "max_invalid": max_invalid, "dtype": dtype,
              "scene_options": normalized_scene_options(scene_options)}
    return _run_batch("index", collection, out_dir, model, params, asset=asset, recursive=recursive, strict=strict,
                      client=client, workers=workers, scheduler=scheduler, device=device, threads=threads,
                      batch_size=batch_size, rotations=rotations, rebuild=rebuild, overwrite=overwrite,
                      progress=progress)


def batch_classify(collection, out_dir: str | os.PathLike, labels: str | Sequence[str | Label],
                   model: ClipModel | str | os.PathLike | None = None, tile: TileSpec | None = None, top_k: int = 3,
                   min_score: float = 0.0, max_invalid: float = 0.5, templates: Sequence[str] | None = None, *,
                   asset: str | None = None, recursive: bool = False, strict: bool = False, client=None,
                   workers: int | None = None, scheduler: str | None = None, device: str = "auto",
                   threads: int | None = None, batch_size: int = 32, rotations: int | None = None, rebuild: bool = False,
                   overwrite: bool = False, progress: ProgressCallback | None = None,
                   **scene_options) -> BatchSummary:
    """Label every tile of every scene (as ``tile_classify``), one GeoParquet partition per scene in ``out_dir``."""
    labels = parse_labels(labels)
    if not 0 <= min_score <= 1:
        raise OptionError(f"min_score must be in [0, 1], got {min_score}")
    params = {"labels": labels, "templates": tuple(templates) if templates else None, "tile": tile or TileSpec(),
              "top_k": int(top_k), "min_score": float(min_score), "max_invalid": max_invalid,
              "scene_options": normalized_scene_options(scene_options)}
    return _run_batch("classify", collection, out_dir, model, params, asset=asset, recursive=recursive,
                      strict=strict, client=client, workers=workers, scheduler=scheduler, device=device,
                      threads=threads, batch_size=batch_size, rotations=rotations, rebuild=rebuild,
                      overwrite=overwrite, progress=progress)


def read_classification(out_dir: str | os.PathLike):
    """All classification partitions of ``out_dir`` as one GeoDataFrame (EPSG:4326 when their CRS differ)."""
    import geopandas as gpd
    import pandas as pd

    parts = []
    for p in partition_files(out_dir, recursive=True):
        read_partition_meta(p, "classify")
        parts.append(gpd.read_parquet(p))
    if not parts:
        raise OutputError(f"{out_dir}: no classification partitions")
    crs = {str(g.crs) for g in parts}
    if len(crs) > 1:
        parts = [g.to_crs("EPSG:4326") for g in parts]
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)
