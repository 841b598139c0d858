"""Many scenes as one resumable job: index or classify a collection, on Dask or in-process.

Each scene is one task that writes one GeoParquet partition (``OUT_DIR/<name>-<hash>.parquet``,
atomically). A partition counts as finished only when its metadata matches the scene file
(``scene_fingerprint``), the model weights (``bundle_fingerprint``) and every parameter
(``tiling_key`` plus dtype / labels); finished scenes are skipped, stale ones rebuilt. The
check runs inside the task, so fingerprinting is spread over the workers as well.

A failing scene becomes a failed result (scene, message), never an exception that stops
the others. Workers load the model once per process (``_WORKER_MODELS``), and verify
its fingerprint: every machine must see the same bundle, scenes and OUT_DIR (a shared
file system). Dask is optional and imported only when a cluster is asked for.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from .bundle import bundle_fingerprint, read_bundle
from .collection import Collection, SceneRef, read_collection
from .encoder import ClipModel, load_model
from .errors import BundleError, DeviceError, MissingDependencyError, OutputError, RsclipError
from .index import INDEX_FORMAT, _plan_to_dict, build_index, read_index_meta, scene_fingerprint, tiling_key, write_index
from .paths import resolve_model_path
from .prompts import Label, parse_labels
from .tiling import TileSpec

log = logging.getLogger(__name__)

KINDS = ("index", "classify")
CLASSIFY_META_KEY = b"rsclip_geo_classify"
CLASSIFY_FORMAT = 1
PARTITION_SUFFIX = ".parquet"
CLUSTER_HINT = "pip install 'rsclip-geo[cluster]'"

ProgressCallback = Callable[["SceneResult", int, int], None]  # (result, scenes finished, scenes total)


# ---- what a task needs ---------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model (a path every worker can read) and what it must turn out to be."""

    path: str
    device: str = "auto"
    threads: int | None = None
    batch_size: int = 32
    fingerprint: str = ""
    name: str = ""
    threads_by_worker: tuple[tuple[str, int], ...] = ()  # Dask worker address -> onnxruntime threads

    @property
    def cache_key(self) -> tuple:
        """The fingerprint is part of it: a long-lived worker reloads a bundle re-exported at the same path."""
        return (self.path, self.fingerprint, self.device, self.threads, self.batch_size)


@dataclass(frozen=True)
class SceneJob:
    """One scene's task: everything is plain data, so it pickles to any worker."""

    kind: str
    scene: SceneRef
    output: str
    model: ModelSpec
    params: dict
    rebuild: bool = False
    overwrite: bool = False


@dataclass
class SceneResult:
    """What happened to one scene: status 'done', 'skipped' (already finished) or 'failed'."""

    name: str
    scene: str
    output: str | None
    status: str = "failed"
    error: str | None = None
    reason: str | None = None  # why it was (re)built: 'new', 'the scene file changed', ...
    tiles: int = 0
    seconds: float = 0.0
    worker: str = ""
    traceback: str | None = None  # for unexpected (non-rsclip) errors


@dataclass
class BatchSummary:
    """The end-of-job report."""

    kind: str
    out_dir: str
    results: list[SceneResult]
    extra: list[str] = field(default_factory=list)  # partitions in OUT_DIR that are not in this collection
    seconds: float = 0.0
    workers: int = 1

    def _with(self, status: str) -> list[SceneResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[SceneResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[SceneResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SceneResult]:
        return self._with("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        n = len(self.results)
        rate = len(self.done) / self.seconds * 60 if self.seconds > 0 else 0.0
        lines = [f"batch {self.kind}: {n} scene{'s' if n != 1 else ''}: {len(self.done)} done, "
                 f"{len(self.skipped)} skipped (already finished), {len(self.failed)} failed; "
                 f"{self.seconds:.1f} s ({rate:.1f} scenes/min) on {self.workers} worker"
                 f"{'s' if self.workers != 1 else ''}; output {self.out_dir}"]
        lines += [f"  FAILED {r.name}: {r.error}" for r in self.failed]
        if self.extra:
            lines.append(f"  note: {len(self.extra)} other partition(s) in {self.out_dir} are not part of this "
                         "collection and are read by search too: " + ", ".join(Path(p).name for p in self.extra[:5])
                         + (" ..." if len(self.extra) > 5 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "out_dir": self.out_dir, "seconds": self.seconds, "workers": self.workers,
                "done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed),
                "extra": self.extra, "scenes": [asdict(r) for r in self.results]}


# ---- per-process model cache -----------------------------------------------------
class ModelCache:
    """Models loaded in this process, by (path, device, threads, batch size); each loaded once.

    ``verify``: check the loaded bundle's fingerprint against the plan's (another machine may hold other files).
    """

    def __init__(self, verify: bool = True, keep: int = 2):
        self.verify, self.keep = verify, keep
        self._models: dict[tuple, ClipModel | BaseException] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def put(self, spec: ModelSpec, model: ClipModel) -> None:
        with self._lock:
            self._models[spec.cache_key] = model

    def get(self, spec: ModelSpec) -> ClipModel:
        with self._lock:  # two task threads in one worker must not load twice
            if spec.cache_key not in self._models:
                try:
                    model = load_model(spec.path, device=spec.device, threads=spec.threads,
                                       batch_size=spec.batch_size)
                    self.loads += 1
                    if self.verify:
                        _check_fingerprint(model, spec)
                    _memoize_class_embeddings(model)
                    self._models[spec.cache_key] = model
                except RsclipError as exc:  # remembered: every later scene fails the same way, fast
                    self._models[spec.cache_key] = exc
                while len(self._models) > self.keep:  # a long-lived worker serving job after job
                    self._models.pop(next(iter(self._models)))
            entry = self._models[spec.cache_key]
        if isinstance(entry, BaseException):
            raise entry
        return entry


_WORKER_MODELS = ModelCache()


def model_load_count() -> int:
    """Models loaded by this process's worker cache (run it on workers with ``client.run``)."""
    return _WORKER_MODELS.loads


def _check_fingerprint(model: ClipModel, spec: ModelSpec) -> None:
    if spec.fingerprint and bundle_fingerprint(model.bundle) != spec.fingerprint:
        raise BundleError(f"{spec.path}: on {socket.gethostname()} this bundle differs from the one the job was "
                          "planned with (other weights); every worker must read the same model bundle")


def _memoize_class_embeddings(model: ClipModel) -> None:
    """Label prompts are encoded once per worker, not once per scene."""
    compute, memo = model.class_embeddings, {}

    def class_embeddings(labels, templates=None):
        key = (tuple(parse_labels(labels)), tuple(templates) if templates else None)
        if key not in memo:
            memo[key] = compute(labels, templates)
        return memo[key]

    model.class_embeddings = class_embeddings


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
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # pyarrow raises several unrelated types for a non-parquet file
        raise OutputError(f"{path}: not a readable GeoParquet file ({exc})") from exc
    if CLASSIFY_META_KEY not in meta:
        raise OutputError(f"{path}: not an rsclip-geo classification partition "
                          f"(no '{CLASSIFY_META_KEY.decode()}' metadata)")
    info = json.loads(meta[CLASSIFY_META_KEY])
    if info.get("format") != CLASSIFY_FORMAT:
        raise OutputError(f"{path}: classification format {info.get('format')} is not {CLASSIFY_FORMAT}")
    return info


def partition_stale_reason(meta: dict, job: SceneJob) -> str | None:
    """Why an existing partition is not this job's result for its scene (None: finished)."""
    if meta.get("scene") != scene_fingerprint(job.scene.path):
        return "the scene file changed"
    if meta.get("model", {}).get("fingerprint") != job.model.fingerprint:
        return f"it was built with model {meta.get('model', {}).get('name')!r} (other weights)"
    for key, want in _expected(job).items():
        if _json(meta.get(key)) != _json(want):
            return {"tiling": "the tiling parameters differ", "embedding_dtype": "the embedding dtype differs",
                    "params": "the labels or scoring parameters differ"}.get(key, f"{key} differs")
    return None


def _decide(job: SceneJob) -> tuple[str | None, bool]:
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


# ---- one task --------------------------------------------------------------------
def run_scene(job: SceneJob) -> SceneResult:
    """The Dask task: skip, or encode and write one scene, with this worker process's cached model."""
    return _run(job, _WORKER_MODELS)


def _worker_address() -> str | None:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker().address
    except ValueError:  # not inside a Dask worker
        return None


def _resolve_threads(spec: ModelSpec, address: str | None) -> ModelSpec:
    if spec.threads is not None or address is None:
        return spec
    known = dict(spec.threads_by_worker)
    if address in known:
        return replace(spec, threads=known[address])
    from distributed import get_worker  # a worker that joined after planning: its own share of the cores

    return replace(spec, threads=max(1, _cores() // max(1, get_worker().state.nthreads)))


def _run(job: SceneJob, cache: ModelCache) -> SceneResult:
    start = time.perf_counter()
    address = _worker_address()
    res = SceneResult(job.scene.name, str(job.scene.path), job.output,
                      worker=address or f"{socket.gethostname()}:{os.getpid()}")
    try:
        reason, replace_existing = _decide(job)
        if reason is None:
            res.status = "skipped"
        else:
            model = cache.get(_resolve_threads(job.model, address))
            writer = _write_index if job.kind == "index" else _write_classification
            res.tiles = writer(job, model, replace_existing or job.overwrite)
            res.status, res.reason = "done", reason
            log.info("%s: %d tiles -> %s (%s)", job.scene.path, res.tiles, job.output, reason)
    except Exception as exc:  # one scene's failure is reported, never raised: the others go on
        res.status = "failed"
        res.error = str(exc) if isinstance(exc, RsclipError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, RsclipError):
            res.traceback = traceback.format_exc()
        log.warning("%s failed: %s", job.scene.path, res.error)
    res.seconds = time.perf_counter() - start
    return res


def _batch_meta(job: SceneJob) -> dict:
    return {"name": job.scene.name, "asset": job.scene.asset}


def _write_index(job: SceneJob, model: ClipModel, overwrite: bool) -> int:
    p = job.params
    index = build_index(job.scene.path, model, p["scales"], p["max_invalid"], **p["scene_options"])
    index.meta["batch"] = _batch_meta(job)
    write_index(index, job.output, overwrite=overwrite, dtype=p["dtype"])
    return len(index)


def _write_classification(job: SceneJob, model: ClipModel, overwrite: bool) -> int:
    import pyarrow.parquet as pq
    from geopandas.io.arrow import _geopandas_to_arrow

    from .classify import tile_classify
    from .writers import atomic_path, check_output

    p = job.params
    check_output(job.output, overwrite, suffixes=(PARTITION_SUFFIX,))
    gdf = tile_classify(job.scene.path, p["labels"], model, tile=p["tile"], top_k=p["top_k"],
                        min_score=p["min_score"], max_invalid=p["max_invalid"], templates=p["templates"],
                        **p["scene_options"])
    plan, summary = gdf.attrs["plan"], gdf.attrs["summary"]
    frame = gdf.copy()
    frame.attrs = {}
    frame.insert(0, "scene", str(job.scene.path))
    meta = {"format": CLASSIFY_FORMAT, "kind": "tile-classify", "scene": scene_fingerprint(job.scene.path),
            "model": {"name": model.bundle.name, "fingerprint": job.model.fingerprint, "embed_dim": model.embed_dim},
            **_expected(job), "plan": _plan_to_dict(plan), "index_format": INDEX_FORMAT,
            "tiles": {"total": summary.tiles_total, "labelled": summary.tiles_encoded,
                      "skipped": summary.tiles_skipped}, "batch": _batch_meta(job)}
    table = _geopandas_to_arrow(frame, index=False)
    schema_meta = {**(table.schema.metadata or {}), CLASSIFY_META_KEY: json.dumps(meta).encode()}
    table = table.replace_schema_metadata(schema_meta)
    with atomic_path(job.output, overwrite) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return len(frame)


# ---- planning ----------------------------------------------------------------------
def partition_path(out_dir: str | os.PathLike, scene: SceneRef) -> Path:
    return Path(out_dir) / f"{scene.key}{PARTITION_SUFFIX}"


def _model_spec(model, device: str, threads: int | None, batch_size: int) -> tuple[ModelSpec, ClipModel | None]:
    """Resolve the model on the client once: a path the workers load, and its fingerprint."""
    if isinstance(model, ClipModel):
        bundle, loaded = model.bundle, model
        device = "cuda" if model.provider == "CUDAExecutionProvider" else "cpu"
        batch_size = model.batch_size
    else:
        bundle, loaded = read_bundle(resolve_model_path(model)), None
    if bundle.root is None:
        raise BundleError(f"model {bundle.name!r} has no bundle folder; workers need a path to load it from")
    spec = ModelSpec(str(Path(bundle.root).resolve()), device, threads, batch_size,
                     bundle_fingerprint(bundle), bundle.name)
    return spec, loaded


def _out_dir(out_dir) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; the batch output is a folder of partitions")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc})") from exc
    if not os.access(out, os.W_OK):
        raise OutputError(f"{out}: output folder is not writable")
    return out.resolve()


def _collection(collection, asset, recursive, strict) -> Collection:
    if isinstance(collection, Collection):
        return collection.check() if strict else collection
    return read_collection(collection, asset=asset, recursive=recursive, strict=strict)


def plan_jobs(kind: str, collection: Collection, out_dir: Path, spec: ModelSpec, params: dict,
              rebuild: bool = False, overwrite: bool = False) -> tuple[list[SceneJob], list[str]]:
    """One job per scene, and the partitions already in OUT_DIR that belong to none of them."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    jobs = [SceneJob(kind, s, str(partition_path(out_dir, s)), spec, params, rebuild, overwrite)
            for s in collection.scenes]
    planned = {Path(j.output).name for j in jobs}
    extra = sorted(str(p) for p in out_dir.glob(f"*{PARTITION_SUFFIX}")
                   if p.name not in planned and not p.name.startswith("."))
    return jobs, extra


# ---- running -------------------------------------------------------------------------
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_cores() -> tuple[str, int]:
    return socket.gethostname(), _cores()


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(f"running on a Dask cluster (--workers / --scheduler) needs dask.distributed: "
                                     f"{CLUSTER_HINT}") from exc
    return distributed


def threads_by_worker(client) -> dict[str, int]:
    """onnxruntime threads per worker so that, on each host, worker threads x onnxruntime threads <= cores."""
    info = client.run(_host_cores)
    nthreads = client.nthreads()
    slots = Counter()
    for address, (host, _) in info.items():
        slots[host] += nthreads.get(address, 1)
    return {address: max(1, cores // slots[host]) for address, (host, cores) in info.items()}


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
            results.append(_run(job, cache))
            if progress:
                progress(results[-1], i + 1, len(jobs))
        return results, 1
    if client is not None:
        return _run_on(client, jobs, progress)
    distributed = _import_distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise DeviceError(f"cannot connect to the Dask scheduler at {scheduler} ({exc})") from exc
        with client:
            return _run_on(client, jobs, progress)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
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
def _problems_as_results(collection: Collection) -> list[SceneResult]:
    return [SceneResult(p.name, p.name, None, "failed", p.message) for p in collection.problems]


def _scene_options(options: dict) -> dict:
    """Every Scene option, defaults filled in: the API and the CLI then agree on when a partition is finished."""
    from .index import normalized_scene_options

    return normalized_scene_options(options)


def _run_batch(kind, collection, out_dir, model, params, *, asset, recursive, strict, client, workers, scheduler,
               device, threads, batch_size, rebuild, overwrite, progress) -> BatchSummary:
    start = time.perf_counter()
    coll = _collection(collection, asset, recursive, strict)
    out = _out_dir(out_dir)
    spec, loaded = _model_spec(model, device, threads, batch_size)
    jobs, extra = plan_jobs(kind, coll, out, spec, params, rebuild, overwrite)
    log.info("batch %s: %d scenes -> %s", kind, len(jobs), out)
    results, n_workers = run_jobs(jobs, client, workers, scheduler, progress, loaded)
    return BatchSummary(kind, str(out), results + _problems_as_results(coll), extra,
                        time.perf_counter() - start, n_workers)


def batch_index(collection, out_dir: str | os.PathLike, model: ClipModel | str | os.PathLike | None = None,
                scales: Sequence[TileSpec] | None = None, max_invalid: float = 0.5, dtype: str = "float16", *,
                asset: str | None = None, recursive: bool = False, strict: bool = False, client=None,
                workers: int | None = None, scheduler: str | None = None, device: str = "auto",
                threads: int | None = None, batch_size: int = 32, rebuild: bool = False, overwrite: bool = False,
                progress: ProgressCallback | None = None, **scene_options) -> BatchSummary:
    """Index every scene of ``collection`` into ``out_dir`` (one partition per scene, readable by search).

    ``collection``: folder / list file / STAC JSON path, list of paths, or a Collection. ``model``: a bundle
    name or path the workers load (a ClipModel is used as is when running in-process). ``client`` (a
    ``distributed.Client``), ``workers`` (a new LocalCluster) or ``scheduler`` (an address); none: in-process.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"embedding dtype must be float16 or float32, got {dtype!r}")
    params = {"scales": list(scales or [TileSpec()]), "max_invalid": max_invalid, "dtype": dtype,
              "scene_options": _scene_options(scene_options)}
    return _run_batch("index", collection, out_dir, model, params, asset=asset, recursive=recursive, strict=strict,
                      client=client, workers=workers, scheduler=scheduler, device=device, threads=threads,
                      batch_size=batch_size, rebuild=rebuild, overwrite=overwrite, progress=progress)


def batch_classify(collection, out_dir: str | os.PathLike, labels: str | Sequence[str | Label],
                   model: ClipModel | str | os.PathLike | None = None, tile: TileSpec | None = None, top_k: int = 3,
                   min_score: float = 0.0, max_invalid: float = 0.5, templates: Sequence[str] | None = None, *,
                   asset: str | None = None, recursive: bool = False, strict: bool = False, client=None,
                   workers: int | None = None, scheduler: str | None = None, device: str = "auto",
                   threads: int | None = None, batch_size: int = 32, rebuild: bool = False, overwrite: bool = False,
                   progress: ProgressCallback | None = None, **scene_options) -> BatchSummary:
    """Label every tile of every scene (as ``tile_classify``), one GeoParquet partition per scene in ``out_dir``."""
    labels = parse_labels(labels)
    if not 0 <= min_score <= 1:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    params = {"labels": labels, "templates": tuple(templates) if templates else None, "tile": tile or TileSpec(),
              "top_k": int(top_k), "min_score": float(min_score), "max_invalid": max_invalid,
              "scene_options": _scene_options(scene_options)}
    return _run_batch("classify", collection, out_dir, model, params, asset=asset, recursive=recursive,
                      strict=strict, client=client, workers=workers, scheduler=scheduler, device=device,
                      threads=threads, batch_size=batch_size, rebuild=rebuild, overwrite=overwrite, progress=progress)


def read_classification(out_dir: str | os.PathLike):
    """All classification partitions of ``out_dir`` as one GeoDataFrame (EPSG:4326 when their CRS differ)."""
    import geopandas as gpd
    import pandas as pd

    paths = sorted(p for p in Path(out_dir).rglob(f"*{PARTITION_SUFFIX}") if not p.name.startswith("."))
    parts = []
    for p in paths:
        read_partition_meta(p, "classify")
        parts.append(gpd.read_parquet(p))
    if not parts:
        raise OutputError(f"{out_dir}: no classification partitions")
    crs = {str(g.crs) for g in parts}
    if len(crs) > 1:
        parts = [g.to_crs("EPSG:4326") for g in parts]
    return gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=parts[0].crs)
