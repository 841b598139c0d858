"""A scene's dense cell embeddings, kept beside it so that the next query on the scene skips the encoder.

``segment`` encodes every window of its layout (tasks/dense_map.py) into one embedding per cell; they do not
depend on the query. They are saved as two sidecar files (beside the scene, or in the user cache when its folder
is read-only, as the tile index):

- ``scene.tif.rsclip-dense.npy``: a plain NumPy file, one record per cell of every window in the plan's order,
  shape [windows, window rows, window cols], fields ``embedding`` (float16 [D], L2-normalised) and ``valid``
  (float16: the cell's share of valid pixels; ``max_invalid`` is applied when scoring, so it is not in the key).
- ``scene.tif.rsclip-dense.json``: what made them (the key) and the .npy's size and SHA-1 of its first and last
  MiB.

They are used only when the key matches -- the scene file (embeddings/key.py fingerprint), the model's weights,
the scene options and the window layout (scale, window, overlap, stagger, cell grid) -- and the .npy is the one
the JSON describes. Anything else (another scene or model, an edited scene, a damaged or crafted file) is
rebuilt, with the reason logged. It is a cache: a full disk or a denied write is a warning, never a failed run.
Cells are scored from the float16 embeddings whether they were just encoded or read back, so a query gives the
same map on the first and the second run.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..outputs.writers import atomic_path, clean_stale_temp, temp_path_beside
from .index import IndexNotSavedWarning, sidecar_path
from .key import normalized_scene_options, scene_fingerprint, sha1_head_tail

log = logging.getLogger(__name__)

DENSE_FORMAT = 1
DENSE_SUFFIX = ".rsclip-dense.npy"
MAX_HEADER = 10000  # bytes of .npy header we parse (numpy's own safety limit)
MAX_META = 1 << 20  # a key is ~1 KB; a larger file is not ours
KEY_PARTS = {"scene": "the scene file changed", "model": "it was made with other model weights",
             "scene_options": "band/stretch/validity options differ",
             "layout": "the window layout differs (scale, window, overlap or stagger)"}


def cell_dtype(dim: int) -> np.dtype:
    return np.dtype([("embedding", "<f2", (dim,)), ("valid", "<f2")])


class DenseCellCache:
    """The sidecar pair of one scene, for one model and scene options; ``layout`` completes the key per run."""

    def __init__(self, scene: str | os.PathLike, model_name: str, model_fingerprint: str, scene_options: dict):
        self.npy = sidecar_path(scene, DENSE_SUFFIX)
        self.meta = self.npy.with_suffix(".json")
        self.base_key = {"format": DENSE_FORMAT, "scene": scene_fingerprint(scene),
                         "model": {"name": model_name, "fingerprint": model_fingerprint},
                         "scene_options": normalized_scene_options(scene_options)}

    def key(self, layout: dict) -> dict:
        return json.loads(json.dumps({**self.base_key, "layout": layout}))

    def stale_reason(self, layout: dict, shape: tuple[int, int, int], dim: int) -> str | None:
        """Why the stored cells cannot be used (None: they can)."""
        if not self.meta.exists() or not self.npy.exists():
            return "none saved yet"
        try:
            if self.meta.stat().st_size > MAX_META:
                return f"{self.meta.name} is too large for a dense cell key"
            meta = json.loads(self.meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{self.meta.name} is not readable JSON ({exc})"
        if not isinstance(meta, dict) or meta.get("format") != DENSE_FORMAT:
            return f"{self.meta.name} is not a format-{DENSE_FORMAT} dense cell file"
        want = self.key(layout)
        for part, why in KEY_PARTS.items():
            if meta.get(part) != want[part]:
                return why
        npy = meta.get("npy") or {}
        try:
            size = self.npy.stat().st_size
            if npy.get("size") != size or npy.get("sha1_head_tail") != sha1_head_tail(self.npy, size):
                return f"{self.npy.name} is not the file {self.meta.name} describes"
            _header(self.npy, shape, dim)
        except (OSError, ValueError) as exc:
            return f"{self.npy.name}: {exc}"
        return None

    def read(self, shape: tuple[int, int, int], dim: int, chunk: int):
        """Yield (first window index, records [k, rows, cols]) in chunks of ``chunk`` windows (bounded memory)."""
        offset = _header(self.npy, shape, dim)
        dtype = cell_dtype(dim)
        per_window = dtype.itemsize * shape[1] * shape[2]
        with open(self.npy, "rb") as f:
            f.seek(offset)
            for i in range(0, shape[0], chunk):
                k = min(chunk, shape[0] - i)
                buf = f.read(k * per_window)
                if len(buf) != k * per_window:
                    raise OSError(f"{self.npy}: ended early (truncated while in use?)")
                yield i, np.frombuffer(buf, dtype).reshape(k, shape[1], shape[2])

    def writer(self, layout: dict, shape: tuple[int, int, int], dim: int) -> "CellWriter":
        return CellWriter(self, layout, shape, dim)


def _header(path: Path, shape: tuple[int, int, int], dim: int) -> int:
    """Check the .npy header against what the run needs; returns the data offset. ValueError if it differs."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        got_shape, fortran, dtype = read(f, max_header_size=MAX_HEADER)
        offset = f.tell()
    if tuple(got_shape) != tuple(shape) or fortran or dtype != cell_dtype(dim):
        raise ValueError(f"holds {dtype} {tuple(got_shape)}, expected {cell_dtype(dim)} {tuple(shape)}")
    if path.stat().st_size != offset + int(np.prod(shape)) * cell_dtype(dim).itemsize:
        raise ValueError("its size does not match its header (truncated?)")
    return offset


class CellWriter:
    """Streams records into a temporary .npy beside the cache and publishes it with its JSON on ``commit``.

    A write failure (full disk, denied folder) only stops the saving; ``discard`` removes what was written.
    """

    def __init__(self, cache: DenseCellCache, layout: dict, shape: tuple[int, int, int], dim: int):
        self.cache, self.layout, self.shape, self.dim = cache, layout, shape, dim
        self.windows = 0
        self.error: Exception | None = None
        self.tmp: Path | None = None
        self.file = None
        try:
            cache.npy.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_temp(cache.npy)
            self.tmp = temp_path_beside(cache.npy)
            self.tmp.unlink()  # re-created by us, so it gets the umask's permissions (mkstemp's are 0600)
            self.file = open(self.tmp, "xb")
            np.lib.format.write_array_header_1_0(
                self.file, {"descr": np.lib.format.dtype_to_descr(cell_dtype(dim)), "fortran_order": False,
                            "shape": tuple(shape)})
        except (OSError, OutputError) as exc:
            self._fail(exc)

    def append(self, embeddings: np.ndarray, valid: np.ndarray) -> None:
        """Add windows: float16 embeddings [k, rows, cols, D] and valid fractions [k, rows, cols]."""
        if self.file is None:
            return
        rec = np.empty(valid.shape, cell_dtype(self.dim))
        rec["embedding"], rec["valid"] = embeddings, valid
        try:
            self.file.write(rec.tobytes())
            self.windows += len(rec)
        except OSError as exc:
            self._fail(exc)

    def commit(self) -> bool:
        """Publish the cells (the .npy, then the JSON naming it); False, with a warning, if they were not saved."""
        if self.file is None:
            self.discard()
            return False
        try:
            self.file.close()
            self.file = None
            if self.windows != self.shape[0]:
                raise OutputError(f"{self.windows} of {self.shape[0]} windows written")
            os.replace(self.tmp, self.cache.npy)
            self.tmp = None
            size = self.cache.npy.stat().st_size
            meta = {**self.cache.key(self.layout),
                    "npy": {"size": size, "sha1_head_tail": sha1_head_tail(self.cache.npy, size)}}
            with atomic_path(self.cache.meta, overwrite=True) as tmp:
                tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        except (OSError, OutputError) as exc:
            self._fail(exc)
            return False
        log.info("saved dense cells %s for reuse", self.cache.npy)
        return True

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
            log.warning("could not save dense cells %s (%s); results are computed but not kept", self.cache.npy,
                        exc)
            warnings.warn(f"{self.cache.npy}: the dense cells could not be saved ({exc}); the next query on this "
                          "scene encodes it again", IndexNotSavedWarning, stacklevel=3)
        self.discard()
