"""Text-query latency over a scene index of >= 10,000 tiles: text encoding vs ranking.

Builds a synthetic SceneIndex (random L2-normalised embeddings of the bundle's
dimension on a grid of 224 px tiles, stamped with the model's fingerprint),
writes it with rsclip_geo.embeddings.index.write_index and reads it back with read_index,
then times, over --runs runs (median and min):

  text     query embedding: the bundle's prompt ensemble through the text encoder
  rank     scores of every tile + top-k (rsclip_geo.tasks.search.score_tiles / top_indices)
  search   rsclip_geo.search(index, query): text + rank + the hits GeoDataFrame
  file     rsclip_geo.search(index_file, query): the same, reading the Parquet index each time

Printed, not asserted.

    .venv/bin/python bench/query_latency.py [--model PATH] [--tiles 10000] [--runs 20] [--top 20]
    .venv/bin/python bench/query_latency.py --tiles 1000000     # a continental mosaic: ~1.5 GB of float32 in RAM
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import rsclip_geo  # noqa: E402
from rsclip_geo.embeddings.index import INDEX_FORMAT, SceneIndex, read_index, write_index  # noqa: E402
from rsclip_geo.runtime.encoder import l2_normalize  # noqa: E402
from rsclip_geo.tasks.search import top_indices, query_embedding, score_tiles, search  # noqa: E402

QUERIES = ("baseball field", "storage tanks", "a harbour with boats", "dense residential area", "bare land",
           "a river crossing farmland")


def synthetic_index(model, n_tiles: int, tile: int = 224, seed: int = 0) -> SceneIndex:
    import geopandas as gpd
    import shapely

    side = math.ceil(math.sqrt(n_tiles))
    rows, cols = np.divmod(np.arange(n_tiles), side)
    x0, y0 = 500000.0, 5000000.0
    geoms = shapely.box(x0 + cols * tile, y0 - (rows + 1) * tile, x0 + (cols + 1) * tile, y0 - rows * tile)
    frame = gpd.GeoDataFrame({"scene": "synthetic.tif", "scale": np.zeros(n_tiles, np.int16),
                              "tile_px": np.full(n_tiles, tile, np.int32), "row": rows.astype(np.int32),
                              "col": cols.astype(np.int32), "valid_frac": np.ones(n_tiles, np.float32)},
                             geometry=geoms, crs="EPSG:32633")
    emb = l2_normalize(np.random.default_rng(seed).standard_normal((n_tiles, model.embed_dim)).astype(np.float32))
    plan = {"scene_width": side * tile, "scene_height": side * tile, "transform": [1.0, 0, x0, 0, -1.0, y0],
            "tile_width": tile, "tile_height": tile, "stride_x": tile, "stride_y": tile, "n_rows": side,
            "n_cols": side, "edge": "pad"}
    meta = {"format": INDEX_FORMAT, "scene": {"path": "synthetic.tif"},
            "model": {"name": model.bundle.name, "fingerprint": model.fingerprint,
                      "embed_dim": model.embed_dim},
            "tiling": {"scales": [], "scene_options": {}, "max_invalid": 0.5}, "plans": [plan]}
    return SceneIndex(frame, emb, meta)


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    ap.add_argument("--tiles", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.tiles < 1:
        ap.error("--tiles must be >= 1")
    model = rsclip_geo.load_model(args.model, device="cpu", threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_index(synthetic_index(model, args.tiles), Path(tmp) / "synthetic.rsclip-index.parquet")
        size_mb = path.stat().st_size / 1e6
        t = time.perf_counter()
        index = read_index(path)
        read_ms = (time.perf_counter() - t) * 1e3
        queries = iter(QUERIES * (args.runs * 4 + 8))
        q = query_embedding(model, QUERIES[0])
        rows = {
            "text": timed(lambda: query_embedding(model, next(queries)), args.runs),
            "rank": timed(lambda: top_indices(score_tiles(index.embeddings, q), args.top), args.runs),
            "search": timed(lambda: search(index, next(queries), top=args.top, model=model), args.runs),
            "file": timed(lambda: search(path, next(queries), top=args.top, model=model), max(3, args.runs // 4)),
        }
    n_prompts = len(model.bundle.templates)
    print(f"query latency: model {model.bundle.name} (dim {model.embed_dim}, {n_prompts} prompt templates) on "
          f"{model.provider}; index of {len(index):,} tiles ({size_mb:.1f} MB float16 Parquet, read in "
          f"{read_ms:.0f} ms)")
    print(f"{'step':<8} {'median ms':>10} {'min ms':>8}")
    for name, (med, best) in rows.items():
        print(f"{name:<8} {med:>10.2f} {best:>8.2f}")
    text, rank = rows["text"][0], rows["rank"][0]
    print(f"split of text + rank: text encoding {100 * text / (text + rank):.0f}%, ranking "
          f"{100 * rank / (text + rank):.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
