"""Two bundles side by side: end-to-end CPU throughput at the default tile size and accuracy per millisecond.

Issue 11 item 4 (the image tower may grow if it pays): a larger tower must keep end-to-end tile_classify
throughput >= 0.5x today's bundle. Both bundles classify the same generated scene (bench/throughput.py's
texture) alternately, --rounds times, so a load change on a shared machine hits both alike; the ratio reported
is the median of the per-round ratios. With --reports (training.model_report --json files, one per bundle), the
AID-30 zero-shot top-1 per millisecond of image encoding is printed too. Tiles per second compare towers at one
tile size; when the candidate's input (its default tile) is larger, it labels a scene in fewer tiles, so the
scenes-per-second ratio is printed as well. --rotations sets each side's rotation ensemble, so one bundle can be
compared with itself averaged over two or four quarter turns. Not a unit test: printed, not asserted.

    python bench/tower_compare.py --models BASE CANDIDATE [--reports BASE.json CAND.json] [--size 2048] [--rounds 5]
    python bench/tower_compare.py --models D D --rotations 1 4 --reports REPORT.json REPORT_ROT4.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rsclip_geo  # noqa: E402
from rsclip_geo.runtime.encoder import ROTATIONS  # noqa: E402
from throughput import make_scene  # noqa: E402  (bench/throughput.py: the same scene texture)

LABELS = ["water", "forest", "farmland", "buildings"]


def _bundle_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs=2, required=True, type=Path, metavar=("BASE", "CANDIDATE"))
    ap.add_argument("--reports", nargs=2, type=Path, default=None, metavar=("BASE_JSON", "CANDIDATE_JSON"))
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rotations", nargs=2, type=int, default=(1, 1), choices=ROTATIONS, metavar=("BASE_R", "CAND_R"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    models = [rsclip_geo.load_model(m, device="cpu", threads=args.threads, rotations=r)
              for m, r in zip(args.models, args.rotations)]
    import geopandas  # noqa: F401  (once per process)

    rates: list[list[float]] = [[], []]
    seconds: list[list[float]] = [[], []]
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(Path(tmp) / "scene.tif", args.size)
        for m in models:  # warm-up: page cache, ORT arenas
            rsclip_geo.tile_classify(scene, LABELS, model=m)
        for _ in range(max(1, args.rounds)):
            for i, m in enumerate(models):
                t = time.perf_counter()
                n = len(rsclip_geo.tile_classify(scene, LABELS, model=m))
                seconds[i].append(time.perf_counter() - t)
                rates[i].append(n / seconds[i][-1])
    ratios = [c / b for b, c in zip(*rates)]
    scene_ratios = [b / c for b, c in zip(*seconds)]  # a tower with larger tiles labels the scene in fewer tiles
    result = {"scene_px": args.size, "rounds": args.rounds, "provider": models[0].provider, "bundles": []}
    for i, (path, m) in enumerate(zip(args.models, models)):
        row = {"bundle": str(path), "name": m.bundle.name, "rotations": m.rotations,
               "size_mb": round(_bundle_mb(path), 1),
               "tile_px": m.bundle.image.size, "e2e_tiles_per_s_best": round(max(rates[i]), 2),
               "e2e_tiles_per_s_median": round(statistics.median(rates[i]), 2),
               "scene_s_median": round(statistics.median(seconds[i]), 3)}
        if args.reports:
            report = json.loads(args.reports[i].read_text())
            top1 = report["aid30_zero_shot"]["top1"]
            ms = 1000.0 / statistics.median(rates[i])
            row.update(aid30_top1=top1, ms_per_tile=round(ms, 2), aid30_top1_per_ms=round(top1 / ms, 4))
        result["bundles"].append(row)
    result["candidate_vs_base_e2e_ratio"] = round(statistics.median(ratios), 3)
    result["ratio_per_round"] = [round(r, 3) for r in ratios]
    result["candidate_vs_base_scene_ratio"] = round(statistics.median(scene_ratios), 3)
    if args.json:
        print(json.dumps(result))
    else:
        for row in result["bundles"]:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
        print(f"candidate / base end-to-end throughput: {result['candidate_vs_base_e2e_ratio']} "
              f"(per round {result['ratio_per_round']}; goal >= 0.5)")
        print(f"candidate / base scenes per second (each at its own tile size): "
              f"{result['candidate_vs_base_scene_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
