"""Dense localisation (``segment`` / the dense head) against SeLo, and objects as polygons. Printed, not asserted.

1. aid       pixel ROC AUC of the dense map vs the SeLo heatmap on AID mosaics (tests/utils/mosaic.py: 4x4 cells of
             150 px, held-out 'val' images), and the wall time of both on the same scene (each run alternately,
             no index: every window is encoded); the timing scene is a --time-grid mosaic (default 8x8, 1200 px).
             --layouts aligned,shifted: 'aligned' mosaics put the scenes on the window grids of both methods (at
             --scale 1.17 a dense window is one scene), 'shifted' ones are cut off-grid, as real scenes are.
2. nwpu      NWPU VHR-10 test images (image_set/test.txt; the training recipe reads only train): for airplane,
             storage tank and ship, ``segment`` on every test image holding the class: recall = share of its
             ground-truth boxes overlapped by a polygon, precision = share of polygons overlapping a box of the
             class; plus false-positive polygons per image on --negatives test images without the class, and the
             share of each positive image the polygons cover (large polygons make "overlapped" easy), and the
             pixel ROC AUC of the dense map against the class's boxes (threshold-free: the map's own ranking).
3. spacenet  IoU of the 'buildings' polygons with the building mask of the SpaceNet scene in ../shared.
4. memory    peak RSS of ``segment`` (each run its own process) on generated --memory-sizes scenes (default 4096^2
             and 16384^2, at --memory-scale 4 scene px per model px to keep the run short; memory does not depend
             on the scale: cells, output grid and strips are bounded): goal ratio <= 1.2.

    .venv/bin/python bench/dense_eval.py --model BUNDLE [--parts aid,nwpu,spacenet] [--nwpu DIR] [--scale 1]
        [--threshold auto] [--seeds 0,1,2] [--max-images N] [--json OUT]

The data (AID, NWPU VHR-10, SpaceNet) stay outside the repository; --nwpu points at NWPU_VHR
(positive_image_set/, ground_truth/, image_set/).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import rsclip_geo  # noqa: E402
from rsclip_geo.tasks.dense_map import dense_map  # noqa: E402
from rsclip_geo.tasks.heatmap import heatmap  # noqa: E402
from rsclip_geo.raster.scene import NotGeoreferencedSceneWarning, Scene  # noqa: E402
from rsclip_geo.tasks.segment import segment  # noqa: E402
from rsclip_geo.runtime.encoder import ROTATIONS  # noqa: E402
from tests.utils.mosaic import (DEFAULT_CLASSES, build_mosaic, class_query, roc_auc, shifted_mosaic,  # noqa: E402
                                truth_on_grid)

NWPU_CLASSES = {1: "airplane", 2: "ship", 3: "storage tank", 4: "baseball diamond", 5: "tennis court",
                6: "basketball court", 7: "ground track field", 8: "harbor", 9: "bridge", 10: "vehicle"}
NWPU_QUERIES = {1: "airplanes", 3: "storage tanks", 2: "ships"}
SPACENET = REPO.parent / "shared" / "data" / "scenes" / "spacenet_pan_050m.tif"
SPACENET_MASK = REPO.parent / "shared" / "data" / "scenes" / "spacenet_pan_050m_building_mask.tif"
_BOX = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*(\d+)")


# ---- 1. AID mosaics ---------------------------------------------------------------------------------------------
SHIFTS = ((40, 95), (75, 20), (110, 60))  # (row, col) px cut offsets of the shifted mosaics, one per seed


def aid_part(model, args, out: Path) -> dict:
    classes = DEFAULT_CLASSES
    result = {}
    for layout in args.layouts:
        table = {c: {"selo": [], "dense": []} for c in classes}
        for seed in args.seeds:
            if layout == "aligned":
                m = build_mosaic(out / f"mosaic_{seed}.tif", classes, (4, 4), seed)
            else:
                m = shifted_mosaic(out / f"shifted_{seed}.tif", classes, (4, 4), seed, SHIFTS[seed % len(SHIFTS)])
            for k, name in enumerate(classes):
                q = class_query(name)
                heat = heatmap(m.path, q, scales=args.selo_scales, model=model, use_index=False)
                table[name]["selo"].append(roc_auc(heat.array, truth_on_grid(m, heat) == k))
                with Scene(m.path) as sc:
                    dm = dense_map(sc, model, q, scale=args.scale, window=args.window, overlap=args.overlap,
                                   staggered=args.stagger)
                table[name]["dense"].append(roc_auc(dm.array, truth_on_grid(m, dm) == k))
        what = ("scene tiles on the window grid" if layout == "aligned" else
                f"cut at offsets {[SHIFTS[s % len(SHIFTS)] for s in args.seeds]} px: no window lines up with a scene")
        print(f"\nAID mosaics, {layout} (4x4 x 150 px, held-out val images; {what}), seeds {args.seeds}: pixel ROC "
              f"AUC, SeLo (windows {args.selo_scales or 'default'} px) vs dense (scale {args.scale}, overlap "
              f"{args.overlap}{', staggered' if args.stagger else ''})")
        print(f"{'class':<18} {'query':<22} {'SeLo':>7} {'dense':>7}")
        for name in classes:
            print(f"{name:<18} {class_query(name):<22} {np.mean(table[name]['selo']):7.3f} "
                  f"{np.mean(table[name]['dense']):7.3f}")
        selo = float(np.mean([np.mean(v["selo"]) for v in table.values()]))
        dense = float(np.mean([np.mean(v["dense"]) for v in table.values()]))
        print(f"{'mean':<18} {'':<22} {selo:7.3f} {dense:7.3f}")
        result[layout] = {"auc": {k: {m: float(np.mean(v[m])) for m in v} for k, v in table.items()},
                          "auc_mean_selo": selo, "auc_mean_dense": dense}

    # timing on one larger mosaic, alternating, no index
    rows, cols = args.time_grid
    big = build_mosaic(out / "timing.tif", classes, (rows, cols), 99, part="all")
    t_selo, t_dense = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        heatmap(big.path, "parking lot", scales=args.selo_scales, model=model, use_index=False)
        t_selo.append(time.perf_counter() - t)
        t = time.perf_counter()
        with Scene(big.path) as sc:
            dense_map(sc, model, "parking lot", scale=args.scale, window=args.window, overlap=args.overlap,
                      staggered=args.stagger)
        t_dense.append(time.perf_counter() - t)
    s, d = float(np.median(t_selo)), float(np.median(t_dense))
    side = rows * 150
    print(f"wall time on a {side}x{side} mosaic (median of {args.rounds} alternating rounds): SeLo {s:.2f} s, "
          f"dense {d:.2f} s, speed-up {s / d:.1f}x")
    # segment's default keeps the query-free cells beside the scene: the next query only reads and scores them
    kw = dict(model=model, scale=args.scale, window=args.window, overlap=args.overlap, staggered=args.stagger)
    t = time.perf_counter()
    first = segment(big.path, "parking lot", **kw)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    nxt = segment(big.path, "forest", **kw)
    t_next = time.perf_counter() - t
    print(f"segment on it: first query {t_first:.2f} s (cells {first.stats['cells_from']}), next query "
          f"{t_next:.2f} s (cells {nxt.stats['cells_from']}): {t_first / t_next:.1f}x")
    return {**result.get("aligned", {}), "layouts": result, "seconds_selo": s, "seconds_dense": d,
            "speedup": s / d, "timing_scene_px": side, "segment_first_query_s": t_first, "segment_next_query_s": t_next}


# ---- 2. NWPU VHR-10 -----------------------------------------------------------------------------------------------
def nwpu_boxes(root: Path, image_id: str) -> list[tuple[int, tuple[int, int, int, int]]]:
    gt = root / "ground_truth" / f"{image_id}.txt"
    out = []
    for line in gt.read_text().splitlines():
        m = _BOX.search(line)
        if m:
            x1, y1, x2, y2, c = map(int, m.groups())
            out.append((c, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))))
    return out


def _as_geotiff(jpg: Path, out: Path) -> Path:
    """The JPEG as a GeoTIFF in a metric CRS with 1 m pixels, x = col, y = -row (so areas and min-area apply)."""
    import rasterio
    from affine import Affine
    from PIL import Image

    rgb = np.asarray(Image.open(jpg).convert("RGB")).transpose(2, 0, 1)
    path = out / (jpg.stem + ".tif")
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 0)) as dst:
        dst.write(rgb)
    return path


def _box_auc(dense: np.ndarray, boxes, cls: int) -> float:
    """Pixel ROC AUC of the dense map (the image's pixel grid) against the boxes of ``cls``: how well the map
    ranks object pixels above the rest of the image, before any threshold (NaN if the grids differ)."""
    truth = np.zeros(dense.shape, bool)
    for c, (x1, y1, x2, y2) in boxes:
        if c == cls:
            truth[y1:y2 + 1, x1:x2 + 1] = True
    return roc_auc(dense, truth) if truth.any() and not truth.all() else float("nan")


def nwpu_part(model, args, out: Path) -> dict:
    from shapely.geometry import box

    root = Path(args.nwpu)
    test = [s.strip() for s in (root / "image_set" / "test.txt").read_text().split() if s.strip()]
    gts = {i: nwpu_boxes(root, i) for i in test if (root / "ground_truth" / f"{i}.txt").is_file()}
    results = {}
    rng = np.random.default_rng(0)
    print(f"\nNWPU VHR-10 test images ({len(test)}; scale {args.scale}, threshold {args.threshold}, min area "
          f"{args.min_area_m2} m2 at 1 m/px)")
    print(f"{'class':<14} {'images':>6} {'boxes':>6} {'polys':>6} {'recall':>7} {'precision':>9} "
          f"{'FP/neg img':>10} {'covered':>8} {'pixel AUC':>9} {'s/img':>6}")
    for cls, query in NWPU_QUERIES.items():
        pos = [i for i, b in gts.items() if any(c == cls for c, _ in b)][:args.max_images]
        neg = [i for i in test if i not in gts or not any(c == cls for c, _ in gts[i])]
        neg = list(rng.choice(neg, size=min(args.negatives, len(neg)), replace=False)) if neg else []
        hit_boxes = n_boxes = good_polys = n_polys = 0
        fp_neg = 0
        covered, aucs = [], []
        seconds = []
        for image_id, positive in [(i, True) for i in pos] + [(i, False) for i in neg]:
            jpg = root / "positive_image_set" / f"{image_id}.jpg"
            if not jpg.is_file():
                jpg = root / "negative_image_set" / f"{image_id}.jpg"
            if not jpg.is_file():
                continue
            tif = _as_geotiff(jpg, out)
            t = time.perf_counter()
            res = segment(tif, query, model=model, use_index=False, threshold=args.threshold, scale=args.scale,
                          window=args.window,
                          overlap=args.overlap, staggered=args.stagger, min_area_m2=args.min_area_m2)
            seconds.append(time.perf_counter() - t)
            polys = [g for g in res.polygons.geometry]
            if not positive:
                fp_neg += len(polys)
                continue
            boxes = [box(x1, -y2, x2, -y1) for c, (x1, y1, x2, y2) in gts[image_id] if c == cls]
            n_boxes += len(boxes)
            hit_boxes += sum(any(b.intersects(p) for p in polys) for b in boxes)
            n_polys += len(polys)
            good_polys += sum(any(p.intersects(b) for b in boxes) for p in polys)
            covered.append(sum(p.area for p in polys) / (res.dense.array.size or 1))
            aucs.append(_box_auc(res.dense.array, gts[image_id], cls))
        recall = hit_boxes / max(n_boxes, 1)
        precision = good_polys / n_polys if n_polys else float("nan")
        fp = fp_neg / max(len(neg), 1)
        name = NWPU_CLASSES[cls]
        print(f"{name:<14} {len(pos):>6} {n_boxes:>6} {n_polys:>6} {recall:7.3f} {precision:9.3f} {fp:10.2f} "
              f"{np.mean(covered):8.1%} {np.nanmean(aucs):9.3f} {np.mean(seconds):6.2f}")
        results[name] = {"images": len(pos), "boxes": n_boxes, "polygons": n_polys, "recall": recall,
                         "precision": precision, "negative_images": len(neg), "fp_per_negative_image": fp,
                         "image_fraction_covered": float(np.mean(covered)),
                         "pixel_auc_in_boxes": float(np.nanmean(aucs)),
                         "seconds_per_image": float(np.mean(seconds))}
    return results


# ---- 3. SpaceNet buildings ------------------------------------------------------------------------------------------
def spacenet_part(model, args, out: Path) -> dict:
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(SPACENET) as ds, rasterio.open(SPACENET_MASK) as mk:
        truth = mk.read(1) > 0
        transform, shape = ds.transform, ds.shape
    res = segment(SPACENET, "buildings", model=model, use_index=False, threshold=args.threshold, scale=args.scale,
                  window=args.window, overlap=args.overlap, staggered=args.stagger, min_area_m2=args.min_area_m2)
    pred = np.zeros(shape, bool)
    if len(res.polygons):
        pred = rasterize(((g, 1) for g in res.polygons.geometry), out_shape=shape, transform=transform) > 0
    inter, union = (pred & truth).sum(), (pred | truth).sum()
    dm = res.dense
    auc = roc_auc(dm.array, truth) if dm.array.shape == truth.shape else float("nan")
    iou = inter / max(union, 1)
    print(f"\nSpaceNet 0.5 m pan (900x900 px): 'buildings' -> {len(res.polygons)} polygons, IoU with the building "
          f"mask {iou:.3f} (buildings cover {truth.mean():.1%}, polygons {pred.mean():.1%}); pixel ROC AUC of the "
          f"dense map {auc:.3f}; threshold {res.threshold:.4f} ({res.threshold_rule}); {res.stats['seconds']:.1f} s")
    return {"iou": float(iou), "polygons": len(res.polygons), "dense_auc": float(auc),
            "truth_fraction": float(truth.mean()), "predicted_fraction": float(pred.mean())}


MEMORY_CHILD = """
import resource, sys, time, warnings, rsclip_geo
warnings.simplefilter("ignore")
model = rsclip_geo.load_model({model!r}, device="cpu")
t = time.perf_counter()
res = rsclip_geo.segment({scene!r}, "buildings", model=model, scale={scale}, use_index=False)
print(len(res.polygons), res.stats["windows"], time.perf_counter() - t,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def memory_part(model_path: str, args, out: Path) -> dict:
    import subprocess

    sys.path.insert(0, str(REPO / "bench"))
    from throughput import make_scene

    rows = []
    for size in args.memory_sizes:
        scene = make_scene(out / f"memory_{size}.tif", size)
        code = MEMORY_CHILD.format(model=model_path, scene=str(scene), scale=args.memory_scale)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=str(REPO))
        n, windows, seconds, rss_kb = res.stdout.split()[-4:]
        rows.append({"scene_px": size, "windows": int(windows), "polygons": int(n), "seconds": float(seconds),
                     "peak_rss_mb": int(rss_kb) / 1024})
        scene.unlink()
        print(f"segment on a {size}^2 scene (scale {args.memory_scale}): {windows} windows, {n} polygons, "
              f"{float(seconds):.0f} s, peak RSS {int(rss_kb) / 1024:.0f} MB", flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio {args.memory_sizes[-1]}^2 / {args.memory_sizes[0]}^2: {ratio:.2f}")
    return {"runs": rows, "peak_rss_ratio": ratio}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Bundle folder with a dense head (models export --dense).")
    ap.add_argument("--parts", default="aid,nwpu,spacenet")
    ap.add_argument("--nwpu", default=None, help="NWPU VHR-10 folder NWPU_VHR (needed for the nwpu part).")
    ap.add_argument("--scale", type=float, default=1.0, help="Scene pixels per model pixel for the dense map.")
    ap.add_argument("--window", type=int, default=None, help="Dense window in model px (default: the bundle's).")
    ap.add_argument("--overlap", type=float, default=0.0, help="Dense window overlap (segment --overlap).")
    ap.add_argument("--stagger", action=argparse.BooleanOptionalAction, default=True,
                    help="Staggered second window grid (segment --stagger/--no-stagger).")
    ap.add_argument("--threshold", default="auto")
    ap.add_argument("--min-area-m2", type=float, default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--selo-scales", default="75,150", help="SeLo window sizes (as tests.utils.mosaic --report).")
    ap.add_argument("--layouts", default="aligned,shifted",
                    help="AID mosaics: 'aligned' (scene tiles on the window grid) and/or 'shifted' (cut off-grid).")
    ap.add_argument("--time-grid", default="8x8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-images", type=int, default=1000)
    ap.add_argument("--negatives", type=int, default=20, help="Test images without the class, for FP/image.")
    ap.add_argument("--memory-sizes", default="4096,16384")
    ap.add_argument("--memory-scale", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rotations", type=int, default=1, choices=ROTATIONS,
                    help="2 or 4: every window's cells are the mean over its first quarter turns (segment --rotations)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.selo_scales = [int(s) for s in args.selo_scales.split(",") if s.strip()] or None
    args.memory_sizes = [int(v) for v in args.memory_sizes.split(",") if v.strip()]
    args.layouts = [v.strip() for v in args.layouts.split(",") if v.strip()]
    if not args.layouts or set(args.layouts) - {"aligned", "shifted"}:
        ap.error(f"--layouts takes aligned and/or shifted, got {args.layouts}")
    args.time_grid = tuple(int(v) for v in args.time_grid.lower().split("x"))
    args.threshold = args.threshold if args.threshold == "auto" else float(args.threshold)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    model = rsclip_geo.load_model(args.model, device="cpu", threads=args.threads, rotations=args.rotations)
    import onnxruntime as ort
    import os

    print(f"dense eval: model {model.bundle.name} ({args.model}), dense {model.bundle.dense}; onnxruntime "
          f"{ort.__version__} CPU, {os.cpu_count()} cores")
    warnings.simplefilter("ignore", NotGeoreferencedSceneWarning)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "aid" in parts:
            report["aid"] = aid_part(model, args, tmp)
        if "nwpu" in parts:
            if not args.nwpu:
                ap.error("the nwpu part needs --nwpu DIR")
            report["nwpu"] = nwpu_part(model, args, tmp)
        if "spacenet" in parts:
            report["spacenet"] = spacenet_part(model, args, tmp)
        if "memory" in parts:
            report["memory"] = memory_part(args.model, args, tmp)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
