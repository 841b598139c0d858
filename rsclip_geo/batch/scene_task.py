"""The task that processes one scene, on a Dask worker or in this process.

The finished-or-not check runs inside the task, so fingerprinting is spread over the workers
as well. Whatever goes wrong becomes a failed ``SceneResult``, never an exception: one bad
scene must not stop the others.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback

from .plan import SceneJob
from .report import SceneResult
from .dask_client import worker_address
from ..errors import RsclipError
from .partitions import build_reason, write_partition
from .worker_model import _WORKER_MODELS, ModelCache, resolve_threads

log = logging.getLogger("rsclip_geo.batch.jobs")  # scenes are logged under the batch job's name


def run_scene(job: SceneJob) -> SceneResult:
    """The Dask task: skip, or encode and write one scene, with this worker process's cached model."""
    return run_job(job, _WORKER_MODELS)


def run_job(job: SceneJob, cache: ModelCache) -> SceneResult:
    start = time.perf_counter()
    address = worker_address()
    res = SceneResult(job.scene.name, str(job.scene.path), job.output,
                      worker=address or f"{socket.gethostname()}:{os.getpid()}")
    try:
        reason, replace_existing = build_reason(job)
        if reason is None:
            res.status = "skipped"
        else:
            model = cache.get(resolve_threads(job.model, address))
            res.tiles = write_partition(job, model, replace_existing or job.overwrite)
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
