"""Label audit against known errors, on AID mosaics (held-out images of the project's AID split).

(a) Polygons: each cell of a ``grid`` mosaic of 150 px AID images is a polygon labelled with its class's words;
    ``--wrong`` (20 %) of them are relabelled to another class. Score: ROC AUC of ``1 - agreement`` for the
    relabelled cells (goal >= 0.90), per seed and pooled over seeds.
(b) Class rasters: the cells as a 10 m class raster with 0, 10, ..., 50 % of cells given a wrong class; true map
    accuracy = share of correct cells (= area). Score: Spearman correlation between the audit's estimated accuracy
    (area-weighted mean agreement) and the true accuracy over all maps (goal >= 0.8), and the mean absolute error.

Both run ``rsclip_geo.audit`` / ``audit_class_raster`` exactly as the CLI does, windows of one cell (150 px;
``--tile-size`` for windows that do not line up with the cells). ``--classes`` picks the AID classes, e.g. the six
the default model never saw in training (Airport,Beach,Bridge,Desert,Pond,Stadium with ``--grid 6x6``).

    .venv/bin/python bench/audit_eval.py [--model PATH] [--seeds 0,1,2] [--grid 8x8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rsclip_geo.raster.tiling import TileSpec  # noqa: E402
from tests.utils.audit_maps import cell_polygons, class_raster  # noqa: E402
from tests.utils.mosaic import CELL, build_mosaic, roc_auc  # noqa: E402

CLASSES = ("Forest", "Farmland", "Parking", "DenseResidential", "Industrial", "Meadow", "Port", "Playground")
ERROR_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts + 1) / 2.0)[inverse]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    return float(np.corrcoef(ra, rb)[0, 1])


def polygons_eval(mosaics, model, wrong_share: float, tile: TileSpec) -> dict:
    from rsclip_geo.tasks.audit import audit

    per_seed, scores, truth = {}, [], []
    for seed, mosaic in mosaics:
        n_wrong = round(wrong_share * mosaic.layout.size)
        labels = cell_polygons(mosaic, n_wrong=n_wrong, seed=seed)
        out = audit(labels, mosaic.path, "label", model=model, tile=tile).frame
        wrong = out["wrong"].to_numpy()
        score = 1.0 - out["agreement"].to_numpy()
        flagged = out["flag"].to_numpy()
        per_seed[seed] = {"auc": roc_auc(score, wrong), "n_wrong": int(wrong.sum()), "n": len(out),
                          "flag_precision": float(wrong[flagged].mean()) if flagged.any() else float("nan"),
                          "flag_recall": float(flagged[wrong].mean())}
        scores.append(score)
        truth.append(wrong)
    return {"per_seed": per_seed, "pooled_auc": roc_auc(np.concatenate(scores), np.concatenate(truth))}


def raster_eval(mosaics, model, folder: Path, levels: Sequence[float], tile: TileSpec) -> dict:
    from rsclip_geo.tasks.audit import audit_class_raster

    rows = []
    for seed, mosaic in mosaics:
        for level in levels:
            n_wrong = round(level * mosaic.layout.size)
            path, names, accuracy = class_raster(mosaic, folder / f"classes_{seed}_{n_wrong}.tif", n_wrong, seed)
            out = audit_class_raster(path, mosaic.path, model=model, tile=tile,
                                     class_names=dict(enumerate(names)))
            s = out.summary.overall
            rows.append({"seed": seed, "error_share": level, "true_accuracy": accuracy, "estimated": s.area_mean,
                         "ci": [s.area_low, s.area_high], "segments": len(out)})
    true = [r["true_accuracy"] for r in rows]
    est = [r["estimated"] for r in rows]
    return {"rows": rows, "spearman": spearman(est, true), "mae": float(np.mean(np.abs(np.subtract(est, true)))),
            "ci_covers": float(np.mean([r["ci"][0] <= r["true_accuracy"] <= r["ci"][1] for r in rows]))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model bundle (default: the shipped model).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--grid", default="8x8")
    parser.add_argument("--classes", default=",".join(CLASSES))
    parser.add_argument("--wrong", type=float, default=0.2, help="(a) share of polygons relabelled wrongly.")
    parser.add_argument("--tile-size", type=int, default=CELL, help="Window size in px (default: one cell).")
    parser.add_argument("--json", default=None, help="Also write the results as JSON here.")
    args = parser.parse_args(argv)
    import rsclip_geo

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    grid = tuple(int(v) for v in args.grid.lower().split("x"))
    model = rsclip_geo.load_model(args.model, device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mosaics = [(s, build_mosaic(folder / f"mosaic_{s}.tif", classes, grid, s)) for s in seeds]
        tile = TileSpec(size_px=args.tile_size, edge="shift")
        poly = polygons_eval(mosaics, model, args.wrong, tile)
        rast = raster_eval(mosaics, model, folder, ERROR_LEVELS, tile)
    seconds = time.perf_counter() - start
    print(f"Label audit on AID mosaics ({grid[0]}x{grid[1]} cells of {CELL} px, {len(classes)} classes, held-out "
          f"'val' images), model {model.bundle.name}, windows of {args.tile_size} px, seeds {seeds}, {seconds:.0f} s")
    print(f"(a) polygons, {args.wrong:.0%} relabelled wrongly: ROC AUC of 1 - agreement for the wrong ones")
    print(f"{'seed':<6} {'wrong/n':>8} {'AUC':>6} {'flag precision':>15} {'flag recall':>12}")
    for seed, r in poly["per_seed"].items():
        print(f"{seed:<6} {r['n_wrong']:>4}/{r['n']:<3} {r['auc']:6.3f} {r['flag_precision']:15.3f} "
              f"{r['flag_recall']:12.3f}")
    print(f"{'pooled':<6} {'':>8} {poly['pooled_auc']:6.3f}   (goal >= 0.90)")
    print("(b) class rasters with injected errors: estimated (area-weighted agreement) vs true accuracy")
    print(f"{'error':>6} " + " ".join(f"{'seed ' + str(s):>17}" for s in seeds))
    for level in ERROR_LEVELS:
        cells = [r for r in rast["rows"] if r["error_share"] == level]
        print(f"{level:>6.0%} " + " ".join(f"{r['true_accuracy']:.3f} -> {r['estimated']:.3f}".rjust(17)
                                           for r in cells))
    print(f"Spearman {rast['spearman']:.3f} (goal >= 0.8), MAE {rast['mae']:.3f}, 95% CI covers the true "
          f"accuracy in {rast['ci_covers']:.0%} of {len(rast['rows'])} maps")
    if args.json:
        Path(args.json).write_text(json.dumps({"polygons": poly, "rasters": rast, "seconds": seconds,
                                               "model": model.bundle.name}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
