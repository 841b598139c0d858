"""The model each worker process loads once and reuses for every scene it is given.

Scenes travel to workers as plain data (``ModelSpec``: a path every worker can read and the
fingerprint planned on the client); each process keeps its loaded models here, checks that
its copy of the bundle is the planned one, and encodes label prompts once, not per scene.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, replace

from .dask_client import worker_share_of_cores
from ..runtime.encoder import ClipModel, load_model
from ..errors import BundleError, RsclipError
from ..runtime.prompts import parse_labels


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
    rotations: int = 1  # ClipModel's rotation ensemble (part of the fingerprint too)

    @property
    def cache_key(self) -> tuple:
        """The fingerprint is part of it: a long-lived worker reloads a bundle re-exported at the same path."""
        return (self.path, self.fingerprint, self.device, self.threads, self.batch_size, self.rotations)


class ModelCache:
    """Models loaded in this process, by (path, device, threads, batch size, rotations); each loaded once.

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
                                       batch_size=spec.batch_size, rotations=spec.rotations)
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
    if spec.fingerprint and model.fingerprint != spec.fingerprint:
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


def resolve_threads(spec: ModelSpec, address: str | None) -> ModelSpec:
    """``spec`` with the onnxruntime threads this worker (Dask ``address``) should use, when the job left it open."""
    if spec.threads is not None or address is None:
        return spec
    known = dict(spec.threads_by_worker)
    if address in known:
        return replace(spec, threads=known[address])
    return replace(spec, threads=worker_share_of_cores())
