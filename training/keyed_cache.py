"""Arrays cached in a run folder under the settings that made them (the dense head's feature caches).

Why: the trunk pass over thousands of windows is the slow part of a dense-head run; a later run with the same
checkpoint and data settings (the ``key``) reuses it, any other key rebuilds it. Written to a temporary file
and renamed, so a killed run never leaves a half cache that looks whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np


def cached_arrays(out: Path, stem: str, key: dict, build: Callable[[], dict], log=print) -> dict:
    """``out/stem.npz`` if ``out/stem.json`` records the same ``key``, else ``build()`` saved there."""
    meta, arrays = out / f"{stem}.json", out / f"{stem}.npz"
    if meta.is_file() and arrays.is_file() and json.loads(meta.read_text()).get("key") == key:
        log(f"{arrays} reused")
        with np.load(arrays) as z:
            return {name: z[name] for name in z.files}
    t0 = time.perf_counter()
    cache = build()
    tmp = out / f"{stem}.tmp.npz"
    np.savez(tmp, **cache)
    tmp.replace(arrays)
    meta.write_text(json.dumps({"key": key, "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return cache
