"""Encoder-bound throughput: bare onnxruntime image encoder vs end-to-end tile_classify.

Generates a 4096x4096 RGB GeoTIFF (textured, deterministic), then measures, in one run:
  bare   tiles/s of the image encoder alone on preprocessed batches (same batch size, threads)
  e2e    tiles/s of rsclip_geo.tile_classify on the scene (open + stretch sample + prompts + read +
         resize + encode + score + the GeoDataFrame), the whole call
and prints their ratio (goal: e2e >= 0.9 x bare). The two are measured alternately, --rounds times: the
ratio reported is the median of the per-round ratios (each pair ran seconds apart, so a load change on a
shared machine hits both alike); best-of tiles/s are printed too. geopandas is imported before timing: a
once-per-process cost, not a per-scene one.
Not a unit test: numbers are printed, not asserted.

    python bench/throughput.py [--model PATH] [--size 4096] [--batch-size 32] [--threads N] [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

import rsclip_geo


def make_scene(path: Path, size: int, seed: int = 0) -> Path:
    """Smooth random colour fields plus fine noise: compresses poorly, like real imagery."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (3, size // 64 + 1, size // 64 + 1)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(1.0, 0, 500000, 0, -1.0, 5000000), tiled=True,
                       blockxsize=512, blockysize=512) as dst:
        for r0 in range(0, size, 512):
            rows = np.arange(r0, min(r0 + 512, size)) / 64.0
            cols = np.arange(size) / 64.0
            block = coarse[:, rows.astype(int)][:, :, cols.astype(int)]
            block = block + rng.normal(0, 20, block.shape)
            dst.write(np.clip(block, 0, 255).astype(np.uint8), window=((r0, r0 + len(rows)), (0, size)))
    return path


def bare_ort(model, n_tiles: int, repeats: int = 1) -> float:
    """tiles/s of the image encoder alone on ready batches (what the pipeline should approach)."""
    s = model.bundle.image.size
    batch = np.random.default_rng(0).standard_normal((model.batch_size, 3, s, s)).astype(np.float32)
    model.encode_batch(batch)  # warm-up
    n_batches = max(1, n_tiles // model.batch_size)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n_batches):
            model.encode_batch(batch)
        best = max(best, n_batches * model.batch_size / (time.perf_counter() - t))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=7, help="alternating bare / e2e measurements (median ratio reported)")
    ap.add_argument("--fixed-batch", choices=("auto", "on", "off"), default="auto",
                    help="pad short batches to the batch size (auto: on CUDA only; see ClipModel)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    model = rsclip_geo.load_model(args.model, device=args.device, threads=args.threads, batch_size=args.batch_size,
                                  fixed_batch={"auto": None, "on": True, "off": False}[args.fixed_batch])
    import geopandas  # noqa: F401  (once per process; see the docstring)

    labels = ["water", "forest", "farmland", "buildings"]
    bares, e2es = [], []
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(Path(tmp) / "scene.tif", args.size)
        plan_tiles = len(rsclip_geo.plan_tiles(args.size, args.size, Affine.identity(), None,
                                               rsclip_geo.TileSpec(), model.bundle.image.size))
        rsclip_geo.tile_classify(scene, labels, model=model)  # warm-up: page cache, ORT arenas
        for _ in range(max(1, args.rounds)):
            bares.append(bare_ort(model, plan_tiles))
            t = time.perf_counter()
            gdf = rsclip_geo.tile_classify(scene, labels, model=model)
            e2es.append(len(gdf) / (time.perf_counter() - t))
    bare, e2e = max(bares), max(e2es)
    ratios = [e / b for b, e in zip(bares, e2es)]
    result = {"model": model.bundle.name, "provider": model.provider, "batch_size": model.batch_size,
              "fixed_batch": model.fixed_batch,
              "threads": args.threads, "scene_px": args.size, "tiles": len(gdf),
              "bare_ort_tiles_per_s": round(bare, 2), "e2e_tiles_per_s": round(e2e, 2),
              "ratio_vs_bare_ort": round(statistics.median(ratios), 3),
              "ratio_per_round": [round(r, 3) for r in ratios]}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
