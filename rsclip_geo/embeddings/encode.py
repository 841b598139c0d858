"""Embeddings of every valid tile of a scene: the one encoding loop behind classify, index and search."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..runtime.encoder import ClipModel
from ..raster.scene import Scene
from ..raster.tile_stream import StreamStats, stream_tiles
from ..raster.tiling import Tile, TilePlan

ProgressCallback = Callable[[int, int], None]  # (tiles done, tiles total)


@dataclass
class TileEmbeddings:
    plan: TilePlan
    tiles: list[Tile]
    embeddings: np.ndarray  # float32 [N, D], L2-normalised
    valid_fraction: np.ndarray  # float32 [N]
    stats: StreamStats


def encode_scene(scene: Scene, plan: TilePlan, model: ClipModel, max_invalid: float = 0.5,
                 progress: ProgressCallback | None = None) -> TileEmbeddings:
    """Encode each tile with at most ``max_invalid`` invalid pixels; skipped tiles are counted in ``stats``."""
    stats = StreamStats()
    tiles, embs, fracs = [], [], []
    done = 0
    with scene.gdal_env():
        for batch in stream_tiles(scene, plan, model.preprocess, model.batch_size, max_invalid, stats=stats):
            if batch.tiles:
                embs.append(model.encode_images(batch.pixels))
                tiles.extend(batch.tiles)
                fracs.append(batch.valid_fraction)
            done += batch.n_seen
            if progress:
                progress(done, len(plan))
    emb = np.concatenate(embs) if embs else np.zeros((0, model.embed_dim), np.float32)
    frac = np.concatenate(fracs) if fracs else np.zeros(0, np.float32)
    return TileEmbeddings(plan, tiles, emb, frac, stats)
