"""Per-tile counting against real annotations: DOTA chips and the SpaceNet building chip.

Each image is tiled exactly as ``rsclip-geo count`` tiles it (``count_objects``,
edge 'shift': full-size tiles, the last row/column moved back inside, which
is also how training/data/b2c.py chips DOTA). A tile's true count is the number
of annotated objects whose centre lies in its half-open window: DOTA box
centres (training.data.boxes.read_dota), SpaceNet building polygon centroids
mapped to pixels. As in RemoteCount, only tiles with 1..max objects are scored
(tiles with 0 or more than max are reported as left out). Metrics: exact-match
accuracy, within-1 accuracy, MAE, and the MAE of always answering the median
true count (the constant baseline) -- rsclip_geo.evaluation.counting.count_metrics.

    .venv/bin/python bench/count_eval.py [--model PATH] [--dota-chip 128] [--spacenet-chip 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rsclip_geo.evaluation.counting import count_metrics  # noqa: E402
from rsclip_geo.runtime.prompts import humanize_class_name  # noqa: E402
from rsclip_geo.raster.tiling import TileSpec  # noqa: E402

DATA = REPO.parent / "shared" / "data"


@dataclass
class CountRows:
    """True and predicted counts of one (image, object) pair over its scored tiles."""

    source: str
    image: str
    object_name: str
    true: np.ndarray
    pred: np.ndarray
    left_out: int  # tiles with 0 or > max objects


def tile_windows(counts) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) pixel windows of the counted tiles (a ``Counts``), from the plan count_objects used."""
    plan, frame = counts.plan, counts.frame
    out = []
    for r, c in zip(frame["row"], frame["col"]):
        t = plan.tile(int(r), int(c))
        out.append((t.col_off, t.row_off, t.col_off + t.width, t.row_off + t.height))
    return out


def points_per_window(points: np.ndarray, windows: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Number of (x, y) pixel points in each half-open window [x0, x1) x [y0, y1)."""
    if len(points) == 0:
        return np.zeros(len(windows), np.int64)
    x, y = points[:, 0], points[:, 1]
    return np.array([int(np.sum((x >= x0) & (x < x1) & (y >= y0) & (y < y1))) for x0, y0, x1, y1 in windows])


def dota_points(label_file: Path) -> dict[str, np.ndarray]:
    """Box centres per DOTA class (pixels)."""
    from training.data.boxes import read_dota

    labels = read_dota(label_file)
    out: dict[str, list] = {}
    for b in labels.boxes:
        out.setdefault(b.name, []).append(b.center)
    return {k: np.asarray(v, np.float64) for k, v in sorted(out.items())}


def polygon_centroids_px(vector_file: Path, scene_file: Path) -> np.ndarray:
    """Polygon centroids (map CRS of the scene) as pixel coordinates of the scene."""
    import geopandas as gpd
    import rasterio

    gdf = gpd.read_file(vector_file)
    with rasterio.open(scene_file) as ds:
        if gdf.crs is not None and ds.crs is not None:
            gdf = gdf.to_crs(ds.crs)
        inv = ~ds.transform
    cents = gdf.geometry.centroid
    return np.array([inv @ (p.x, p.y) for p in cents], np.float64).reshape(-1, 2)


def score(source: str, image: Path, object_name: str, points: np.ndarray, counts, max_count: int) -> CountRows:
    truth = points_per_window(points, tile_windows(counts))
    keep = (truth >= 1) & (truth <= max_count)
    return CountRows(source, image.name, object_name, truth[keep], counts.frame["count"].to_numpy()[keep],
                     int((~keep).sum()))


def evaluate(model, dota_dir: Path | None, spacenet: tuple[Path, Path] | None, dota_chip: int = 128,
             spacenet_chip: int = 224, max_count: int = 10, numerals: str = "words") -> list[CountRows]:
    """Count every annotated class of each DOTA image, and buildings in the SpaceNet chip."""
    from rsclip_geo.tasks.count import count_objects

    rows: list[CountRows] = []
    if dota_dir is not None:
        for image in sorted((dota_dir / "images").glob("*.png")):
            per_class = dota_points(dota_dir / "labelTxt" / f"{image.stem}.txt")
            for cls, pts in per_class.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # no CRS: pixel coordinates, as intended here
                    counts = count_objects(image, humanize_class_name(cls), max_count, model=model,
                                           tile=TileSpec(size_px=dota_chip, edge="shift"), numerals=numerals,
                                           use_index=False)
                rows.append(score("DOTA", image, cls, pts, counts, max_count))
    if spacenet is not None:
        scene, polygons = spacenet
        counts = count_objects(scene, "building", max_count, model=model, numerals=numerals,
                               tile=TileSpec(size_px=spacenet_chip, edge="shift"), use_index=False)
        rows.append(score("SpaceNet", scene, "building", polygon_centroids_px(polygons, scene), counts, max_count))
    return rows


def summarize(rows: Sequence[CountRows]) -> list[dict]:
    """One line per (source, object) plus 'all'; metrics from count_metrics."""
    groups: dict[tuple[str, str], list[CountRows]] = {}
    for r in rows:
        groups.setdefault((r.source, r.object_name), []).append(r)
    groups[("all", "all")] = list(rows)
    out = []
    for (source, obj), rs in groups.items():
        true = np.concatenate([r.true for r in rs]) if rs else np.zeros(0)
        pred = np.concatenate([r.pred for r in rs]) if rs else np.zeros(0)
        left = sum(r.left_out for r in rs)
        line = {"source": source, "object": obj, "tiles": int(true.size), "left_out": left}
        if true.size:
            line.update(count_metrics(true, pred).to_dict())
        out.append(line)
    return out


def print_table(lines: Sequence[dict], header: str) -> None:
    print(header)
    print(f"{'source':<9} {'object':<14} {'tiles':>5} {'left out':>8} {'exact':>6} {'within1':>7} {'MAE':>6} "
          f"{'base MAE':>8} {'median':>6}")
    for ln in lines:
        if not ln["tiles"]:
            print(f"{ln['source']:<9} {ln['object']:<14} {0:>5} {ln['left_out']:>8}   (no tile with 1..max objects)")
            continue
        print(f"{ln['source']:<9} {ln['object']:<14} {ln['tiles']:>5} {ln['left_out']:>8} {ln['exact']:>6.3f} "
              f"{ln['within1']:>7.3f} {ln['mae']:>6.2f} {ln['baseline_mae']:>8.2f} {ln['baseline_count']:>6.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    import rsclip_geo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Bundle folder or name (default: the shipped model).")
    parser.add_argument("--data", default=str(DATA), help="Shared data folder (dota/, scenes/).")
    parser.add_argument("--dota-dir", default=None, help="DOTA folder with images/ and labelTxt/ (default: DATA/dota).")
    parser.add_argument("--sources", default="dota,spacenet")
    parser.add_argument("--dota-chip", type=int, default=128, help="DOTA tile size in px (0.26 m GSD).")
    parser.add_argument("--spacenet-chip", type=int, default=224, help="SpaceNet tile size in px (0.5 m GSD).")
    parser.add_argument("--max", type=int, default=10, dest="max_count")
    parser.add_argument("--numerals", choices=("words", "digits", "both"), default="words",
                        help="Numbers in the prompts: 'three', '3', or both ensembled.")
    parser.add_argument("--json", default=None, help="Also write the table and per-tile rows as JSON.")
    args = parser.parse_args(argv)
    if args.max_count < 1:
        parser.error("--max must be >= 1")
    data = Path(args.data)
    sources = {s.strip() for s in args.sources.split(",") if s.strip()}
    model = rsclip_geo.load_model(args.model, device="cpu")
    dota_dir = Path(args.dota_dir) if args.dota_dir else data / "dota"
    spacenet = (data / "scenes" / "spacenet_pan_050m.tif", data / "scenes" / "spacenet_pan_050m_buildings.geojson")
    start = time.perf_counter()
    rows = evaluate(model, dota_dir if "dota" in sources else None, spacenet if "spacenet" in sources else None,
                    args.dota_chip, args.spacenet_chip, args.max_count, args.numerals)
    lines = summarize(rows)
    print_table(lines, f"Per-tile counting (prompts for 1..{args.max_count}, numerals as {args.numerals}), "
                       f"model {model.bundle.name}, DOTA tiles "
                       f"{args.dota_chip} px, SpaceNet tiles {args.spacenet_chip} px, "
                       f"{time.perf_counter() - start:.0f} s on {model.provider}")
    if args.json:
        Path(args.json).write_text(json.dumps({"table": lines, "rows": [
            {"source": r.source, "image": r.image, "object": r.object_name, "true": r.true.tolist(),
             "pred": r.pred.tolist(), "left_out": r.left_out} for r in rows]}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
