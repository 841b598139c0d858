"""Peak memory vs scene size: tile_classify on generated 4096^2 and 16384^2 scenes.

Each run is a separate process, so its peak RSS (ru_maxrss) is its own. The
pipeline streams windows, so peak RSS should not grow with the scene
(goal: ratio <= 1.2). Printed, not asserted.

    python bench/memory.py [--model PATH] [--sizes 4096,16384] [--tile-size 224] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import resource, sys, time, rsclip_geo
model = rsclip_geo.load_model({model!r}, batch_size={batch})
t = time.perf_counter()
gdf = rsclip_geo.tile_classify({scene!r}, ["water", "forest", "farmland", "buildings"], model=model,
                               tile=rsclip_geo.TileSpec(size_px={tile}))
print(len(gdf), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--tile-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from throughput import make_scene

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            scene = make_scene(Path(tmp) / f"scene_{size}.tif", size)
            code = CHILD.format(model=args.model, scene=str(scene), tile=args.tile_size, batch=args.batch_size)
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            tiles, seconds, rss_kb = out.stdout.split()
            rows.append({"scene_px": size, "scene_mb_uint8_rgb": round(size * size * 3 / 2**20), "tiles": int(tiles),
                         "seconds": round(float(seconds), 1), "peak_rss_mb": round(int(rss_kb) / 1024, 1),
                         "wall_s": round(time.perf_counter() - t, 1)})
            scene.unlink()
    result = {"runs": rows, "peak_rss_ratio_largest_vs_smallest": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)}
    if args.json:
        print(json.dumps(result))
    else:
        for r in rows:
            print(r)
        print("peak RSS ratio (largest / smallest scene):", result["peak_rss_ratio_largest_vs_smallest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
