"""SeLo heatmap throughput: windows/s and scene megapixels/s on a generated scene, and the cost of the output grid.

1. end to end   rsclip_geo.heatmap on a generated --size x --size GeoTIFF (no index: every window is encoded),
                split into encoding (windows through the image encoder) and the rest (accumulate, normalise, smooth)
2. grid only    accumulation + smoothing for a --huge x --huge px scene with random window scores: the output
                grid is bounded (heatmap.DEFAULT_MAX_CELLS), so this stays small however large the scene is

Printed, not asserted.

    .venv/bin/python bench/heatmap_throughput.py [--model PATH] [--size 2048] [--scales 224,448] [--huge 40000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import rsclip_geo  # noqa: E402
from rsclip_geo.tasks.heatmap import (DEFAULT_MAX_CELLS, OutputGrid, accumulate, auto_sigma, minmax, selo_specs,  # noqa: E402
                                smooth)
from rsclip_geo.raster.tiling import plan_tiles  # noqa: E402
from throughput import make_scene  # noqa: E402


def grid_only(size: int, scales: list[int], model_size: int) -> dict:
    """Accumulate + normalise + smooth for a size x size scene (random scores), on the default output grid."""
    import math

    from affine import Affine

    auto = math.sqrt(size * size / DEFAULT_MAX_CELLS) if size * size > DEFAULT_MAX_CELLS else 1.0
    n = math.ceil(size / auto)
    grid = OutputGrid(n, n, size / n, size / n, Affine.scale(size / n), None)
    rng = np.random.default_rng(0)
    windows, plans = [], []
    for spec in selo_specs(scales):
        plan = plan_tiles(size, size, Affine.identity(), None, spec, model_size)
        plans.append(plan)
        rows, cols = np.divmod(np.arange(len(plan)), plan.n_cols)
        r0 = np.minimum(rows * plan.stride_y, size - plan.tile_height)
        c0 = np.minimum(cols * plan.stride_x, size - plan.tile_width)
        windows.append((c0, r0, plan.tile_width, plan.tile_height, rng.random(len(plan))))
    t = time.perf_counter()
    total, count = accumulate(grid, windows)
    valid = count > 0
    norm, _, _ = minmax(np.divide(total, count, out=np.zeros_like(total), where=valid), valid)
    sigma = auto_sigma(grid, plans)
    smooth(norm, valid, sigma)
    return {"windows": sum(len(w[4]) for w in windows), "cells": n * n, "cell_px": size / n, "sigma": sigma,
            "seconds": time.perf_counter() - t}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    ap.add_argument("--size", type=int, default=2048, help="generated scene side in pixels")
    ap.add_argument("--scales", default=None, help="window sizes in px (default: model input size and twice it)")
    ap.add_argument("--huge", type=int, default=40000, help="scene side for the grid-only measurement")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    model = rsclip_geo.load_model(args.model, device="cpu", threads=args.threads, batch_size=args.batch_size)
    size = model.bundle.image.size
    scales = [int(s) for s in args.scales.split(",")] if args.scales else [size, 2 * size]
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(Path(tmp) / "scene.tif", args.size)
        heat = rsclip_geo.heatmap(scene, "a dense residential area", scales=scales, model=model, use_index=False)
    s = heat.stats
    windows, secs = s["windows_used"], s["seconds"]
    mpx = args.size * args.size / 1e6
    print(f"heatmap throughput: model {model.bundle.name} ({size} px input) on {model.provider}, batch "
          f"{model.batch_size}; scene {args.size}x{args.size} px, windows {scales} px at half-window stride")
    print(f"end to end: {windows} windows in {secs:.2f} s = {windows / secs:.1f} windows/s, "
          f"{mpx / secs:.2f} scene Mpx/s; output {heat.shape[1]}x{heat.shape[0]} cells, sigma {heat.sigma:.3g}")
    enc = s["seconds_embeddings"]
    print(f"  split: window embeddings (read + resize + encode) {enc:.2f} s = {windows / enc:.1f} windows/s; "
          f"text, accumulate, normalise, smooth {secs - enc:.2f} s")
    g = grid_only(args.huge, scales, size)
    print(f"grid only ({args.huge}x{args.huge} px scene, random scores): {g['windows']:,} windows onto "
          f"{g['cells']:,} cells ({g['cell_px']:.1f} px each, sigma {g['sigma']:.2f}) in {g['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
