"""Read, mask and preprocess tiles ahead of the encoder, in full batches.

A background thread reads windows and resizes them while the encoder runs on
the previous batch (rasterio, PIL and onnxruntime all release the GIL), so
the encoder is never waiting on I/O for long. Tiles with too many invalid
pixels are skipped and counted, never encoded.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from rasterio.windows import Window

from ..errors import OptionError, RasterInputError
from .scene import Scene
from .tiling import Tile, TilePlan
from ..runtime.preprocess import Preprocessor


@dataclass
class TileBatch:
    tiles: list[Tile]
    pixels: np.ndarray  # float32 [N, 3, size, size], ready for the image encoder
    valid_fraction: np.ndarray  # float32 [N]
    n_seen: int  # tiles consumed for this batch, skipped ones included (for progress)


@dataclass
class StreamStats:
    total: int = 0
    encoded: int = 0
    skipped: int = 0
    skipped_tiles: list[tuple[int, int]] = field(default_factory=list)


def fill_invalid(chw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels take the tile's mean valid colour, so nodata does not read as black terrain."""
    if valid.all():
        return chw
    out = chw.copy()
    out[:, ~valid] = chw[:, valid].mean(axis=1).round().astype(np.uint8)[:, None]
    return out


MAX_TILES_PER_READ = 64  # tiles of one row read as one strip: one GDAL call instead of many
MAX_STRIP_BYTES = 256 * 2**20  # ... unless that strip would take more memory than this (tall tiles, wide scenes)
MAX_TILE_READ_BYTES = 4 * 2**30  # one tile whose read needs more than this is refused before any work


def read_bytes_per_pixel(scene: Scene) -> int:
    """Peak bytes per pixel of a window read by Scene.read_chw: raw bands, masks, validity, the stretch's float32
    copy and its uint8 result, the RGB replication and the padded copy of edge windows."""
    n = len(scene.bands)
    itemsize = max(np.dtype(scene.ds.dtypes[b - 1]).itemsize for b in scene.bands)
    passthrough = itemsize == 1 and scene.stretch.identity
    return n * itemsize + n + 2 + (0 if passthrough else n * 5) + 3 + 4


def tiles_per_read(scene: Scene, plan: TilePlan, max_bytes: int | None = None) -> int:
    """How many tiles of a row one strip read takes: at most MAX_TILES_PER_READ, and at most ``max_bytes``
    (MAX_STRIP_BYTES) of memory, so memory stays bounded by the tile size, not the scene width."""
    max_bytes = MAX_STRIP_BYTES if max_bytes is None else max_bytes
    per_tile = plan.tile_width * plan.tile_height * read_bytes_per_pixel(scene)
    if per_tile > MAX_TILE_READ_BYTES:
        raise RasterInputError(
            f"{scene.path}: one {plan.tile_width}x{plan.tile_height} px tile needs {per_tile / 2**30:.1f} GiB of "
            f"memory to read (limit {MAX_TILE_READ_BYTES / 2**30:.0f} GiB); use a smaller tile size")
    return int(max(1, min(MAX_TILES_PER_READ, max_bytes // per_tile)))


def strip_windows(scene: Scene, plan: TilePlan, max_bytes: int | None = None
                  ) -> Iterator[tuple[Window, list[Tile]]]:
    """(strip window, its tiles) for each read, row-major: runs of a row's tiles bounded by tiles_per_read."""
    step = tiles_per_read(scene, plan, max_bytes)
    for row in range(plan.n_rows):
        for first in range(0, plan.n_cols, step):
            tiles = [plan.tile(row, col) for col in range(first, min(first + step, plan.n_cols))]
            c0 = tiles[0].col_off
            yield Window(c0, tiles[0].row_off, tiles[-1].col_off + tiles[-1].width - c0, tiles[0].height), tiles


def _tile_pixels(scene: Scene, plan: TilePlan) -> Iterator[tuple[Tile, np.ndarray, np.ndarray]]:
    """(tile, 3xHxW RGB, valid) in row-major order, reading each run of a row's tiles as one strip window."""
    for strip, tiles in strip_windows(scene, plan):
        c0 = tiles[0].col_off
        chw, valid = scene.read_chw(strip)
        for t in tiles:
            xs = slice(t.col_off - c0, t.col_off - c0 + t.width)
            yield t, chw[:, :, xs], valid[:, xs]


def _produce(scene: Scene, plan: TilePlan, preprocess: Preprocessor, batch_size: int, max_invalid: float,
             stats: StreamStats) -> Iterator[TileBatch]:
    size = preprocess.spec.size
    batch_size = max(1, min(batch_size, len(plan)))  # the buffer never holds more tiles than the scene has
    tiles: list[Tile] = []
    fracs: list[float] = []
    pixels = np.empty((batch_size, 3, size, size), dtype=np.float32)
    seen = 0
    for tile, chw, valid in _tile_pixels(scene, plan):
        seen += 1
        frac = float(valid.mean())
        if frac <= 0 or (1.0 - frac) > max_invalid:
            stats.skipped += 1
            stats.skipped_tiles.append((tile.row, tile.col))
            continue
        preprocess.from_chw(fill_invalid(chw, valid), out=pixels[len(tiles)])
        tiles.append(tile)
        fracs.append(frac)
        if len(tiles) == batch_size:
            yield TileBatch(tiles, pixels, np.asarray(fracs, np.float32), seen)
            tiles, fracs, seen = [], [], 0
            pixels = np.empty((batch_size, 3, size, size), dtype=np.float32)
    if tiles or seen:
        yield TileBatch(tiles, pixels[:len(tiles)], np.asarray(fracs, np.float32), seen)


def check_max_invalid(max_invalid) -> float:
    """``max_invalid`` is a fraction of a tile's pixels: a number in [0, 1] (NaN, -1 or 5 would silently keep or
    drop every tile)."""
    try:
        value = float(max_invalid)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(max_invalid, bool) or not 0.0 <= value <= 1.0:
        raise OptionError(f"max_invalid is the largest fraction of invalid pixels a tile may have, a number in "
                          f"[0, 1]; got {max_invalid!r}")
    return value


def stream_tiles(scene: Scene, plan: TilePlan, preprocess: Preprocessor, batch_size: int = 32,
                 max_invalid: float = 0.5, prefetch: int = 2, stats: StreamStats | None = None
                 ) -> Iterator[TileBatch]:
    """Yield batches of valid tiles, read ``prefetch`` batches ahead in a background thread."""
    max_invalid = check_max_invalid(max_invalid)
    stats = stats if stats is not None else StreamStats()
    stats.total = len(plan)
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Hand ``item`` to the consumer; give up once it has stopped listening (never block forever)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for batch in _produce(scene, plan, preprocess, batch_size, max_invalid, stats):
                if not put(batch):
                    return
            put(done)
        except BaseException as exc:  # forwarded to the consumer
            put(exc)

    thread = threading.Thread(target=worker, name="rsclip-tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            stats.encoded += len(item.tiles)
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
