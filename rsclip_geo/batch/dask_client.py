"""Reaching a Dask cluster for a batch job, and sizing onnxruntime threads on its workers.

Dask is optional (``rsclip-geo[cluster]``): nothing here imports ``distributed`` until a
cluster is asked for, so the in-process path and the core package never need it.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from contextlib import contextmanager

from ..errors import DeviceError, MissingDependencyError, OptionError

CLUSTER_HINT = "pip install 'rsclip-geo[cluster]'"


def import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(f"running on a Dask cluster (--workers / --scheduler) needs dask.distributed: "
                                     f"{CLUSTER_HINT}") from exc
    return distributed


def check_workers(workers: int | None) -> None:
    """A local cluster's size: 1 to 4 processes per core (each loads its own model); None: no local cluster."""
    if workers is None:
        return
    cores = os.cpu_count() or 1
    if isinstance(workers, bool) or not 1 <= workers <= 4 * cores:
        raise OptionError(f"workers must be 1-{4 * cores} on this machine ({cores} cores; each worker is a "
                          f"process with its own model), got {workers!r}")


@contextmanager
def open_client(client=None, workers: int | None = None, scheduler: str | None = None):
    """``client`` as given (left open), a client of the scheduler at ``scheduler``, or one of a new
    LocalCluster of ``workers`` single-threaded processes; the last two are closed on exit."""
    if client is not None:
        yield client
        return
    if scheduler is None:
        check_workers(workers)
    distributed = import_distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise DeviceError(f"cannot connect to the Dask scheduler at {scheduler} ({exc})") from exc
        with client:
            yield client
        return
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client


def worker_address() -> str | None:
    """This process's Dask worker address (None: not inside a Dask worker)."""
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker().address
    except ValueError:  # not inside a Dask worker
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_cores() -> tuple[str, int]:
    return socket.gethostname(), usable_cores()


def threads_by_worker(client) -> dict[str, int]:
    """onnxruntime threads per worker so that, on each host, worker threads x onnxruntime threads <= cores."""
    info = client.run(_host_cores)
    nthreads = client.nthreads()
    slots = Counter()
    for address, (host, _) in info.items():
        slots[host] += nthreads.get(address, 1)
    return {address: max(1, cores // slots[host]) for address, (host, cores) in info.items()}


def worker_share_of_cores() -> int:
    """onnxruntime threads for a worker that joined after planning: its own share of the host's cores."""
    from distributed import get_worker

    return max(1, usable_cores() // max(1, get_worker().state.nthreads))
