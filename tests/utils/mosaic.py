"""Mosaic GeoTIFFs of real AID images with a known class layout, and ROC AUC of heatmaps against it.

A mosaic is a ``rows x cols`` grid of 150 px AID images, each class filling
the same number of cells in a seeded random arrangement, georeferenced in UTM
with 1 m pixels. Images come from the held-out part of the project's fixed AID
split (``val`` of training/splits/aid_split.json), so a model trained on the
``train`` part never saw them.

Report (the localisation table cited in the closing notes)::

    .venv/bin/python -m tests.utils.mosaic --report [--model PATH] [--seeds 0,1,2] [--scales 75,150]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from affine import Affine
from PIL import Image

from rsclip_geo.runtime.prompts import humanize_class_name
from tests.utils.rasters import write_geotiff

REPO = Path(__file__).resolve().parents[2]
AID_ROOT = REPO.parent / "shared" / "data" / "aid"
SPLIT_FILE = REPO / "training" / "splits" / "aid_split.json"
DEFAULT_CLASSES = ("Forest", "Farmland", "Parking", "DenseResidential")
QUERIES = {"Parking": "parking lot", "StorageTanks": "storage tanks", "BareLand": "bare land",
           "Center": "city center", "Playground": "playground with a running track",
           "Port": "harbour with ships", "RailwayStation": "railway station", "Industrial": "industrial area",
           "Commercial": "commercial area"}
CELL = 150
ORIGIN = (500000.0, 4500000.0)  # UTM 33N, 1 m pixels


def class_query(name: str) -> str:
    """The text query for an AID class folder name."""
    return QUERIES.get(name, humanize_class_name(name))


@dataclass
class Mosaic:
    path: Path
    classes: tuple[str, ...]
    layout: np.ndarray  # [rows, cols] class index per cell
    truth: np.ndarray  # [H, W] class index per pixel
    transform: Affine
    crs: str
    images: list[Path]


def _pool(aid_root: Path, name: str, part: str) -> list[Path]:
    if SPLIT_FILE.is_file() and part != "all":
        split = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
        files = split.get(part, {}).get(name) or split.get("unseen", {}).get(name)
        if files:
            return [aid_root / name / f for f in files]
    return sorted((aid_root / name).glob("*.jpg"))


def build_mosaic(path: Path, classes: Sequence[str] = DEFAULT_CLASSES, grid: tuple[int, int] = (4, 4),
                 seed: int = 0, aid_root: Path = AID_ROOT, part: str = "val", cell: int = CELL,
                 crs: str = "EPSG:32633") -> Mosaic:
    """Write a mosaic GeoTIFF at ``path`` and return it with its truth raster."""
    rows, cols = grid
    n = rows * cols
    if n % len(classes):
        raise ValueError(f"{rows}x{cols} cells cannot be split evenly between {len(classes)} classes")
    rng = random.Random(f"mosaic:{seed}")
    layout = [i for i in range(len(classes)) for _ in range(n // len(classes))]
    rng.shuffle(layout)
    picks = {c: rng.sample(_pool(aid_root, c, part), n // len(classes)) for c in classes}
    data = np.zeros((3, rows * cell, cols * cell), np.uint8)
    truth = np.zeros((rows * cell, cols * cell), np.int16)
    used = []
    for k, cls in enumerate(layout):
        r, c = divmod(k, cols)
        img_path = picks[classes[cls]].pop()
        used.append(img_path)
        img = Image.open(img_path).convert("RGB")
        if img.size != (cell, cell):
            img = img.resize((cell, cell), Image.BICUBIC)
        data[:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = np.asarray(img).transpose(2, 0, 1)
        truth[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = cls
    transform = Affine(1.0, 0, ORIGIN[0], 0, -1.0, ORIGIN[1])
    write_geotiff(Path(path), data, crs=crs, transform=transform)
    return Mosaic(Path(path), tuple(classes), np.array(layout).reshape(rows, cols), truth, transform, crs, used)


def shifted_mosaic(path: Path, classes: Sequence[str] = DEFAULT_CLASSES, grid: tuple[int, int] = (4, 4),
                   seed: int = 0, offset: tuple[int, int] = (40, 95), aid_root: Path = AID_ROOT, part: str = "val",
                   cell: int = CELL) -> Mosaic:
    """A ``grid`` mosaic's worth of pixels cut at ``offset`` (row, col px) from a mosaic two cells larger.

    Why: a window grid that starts at the origin lines up with the 150 px scenes of an unshifted mosaic, so every
    other window holds exactly one scene; real scenes have no such seams. The cut keeps its georeferencing, so
    ``truth_on_grid`` (which maps through coordinates) reads the right classes.
    """
    import rasterio
    from rasterio.windows import Window

    if not all(0 <= o < 2 * cell for o in offset):
        raise ValueError(f"offset must be within two cells ({2 * cell} px), got {offset}")
    big = build_mosaic(Path(path).with_suffix(".full.tif"), classes, (grid[0] + 2, grid[1] + 2), seed, aid_root,
                       part, cell)
    win = Window(offset[1], offset[0], grid[1] * cell, grid[0] * cell)
    with rasterio.open(big.path) as src:
        profile = dict(src.profile, width=int(win.width), height=int(win.height), transform=src.window_transform(win))
        data = src.read(window=win)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Mosaic(Path(path), big.classes, big.layout, big.truth, big.transform, big.crs, big.images)


# ---- metrics ----------------------------------------------------------------------------------------------------
def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve = Mann-Whitney U / (n_pos * n_neg), ties counted half; NaN scores are left out."""
    scores, positive = np.asarray(scores, np.float64).ravel(), np.asarray(positive, bool).ravel()
    keep = np.isfinite(scores)
    scores, positive = scores[keep], positive[keep]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative cells")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # 0-based rank of the first of each tie group
    ranks = first + (counts + 1) / 2.0  # mean 1-based rank of each tie group
    r = ranks[inverse]
    u = r[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def truth_on_grid(mosaic: Mosaic, heat) -> np.ndarray:
    """The class raster sampled at the heatmap cells' centres."""
    rows, cols = heat.array.shape
    jj, ii = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    t, inv = heat.transform, ~mosaic.transform
    x, y = t.a * jj + t.b * ii + t.c, t.d * jj + t.e * ii + t.f
    c = np.clip(np.floor(inv.a * x + inv.b * y + inv.c).astype(int), 0, mosaic.truth.shape[1] - 1)
    r = np.clip(np.floor(inv.d * x + inv.e * y + inv.f).astype(int), 0, mosaic.truth.shape[0] - 1)
    return mosaic.truth[r, c]


def mosaic_aucs(mosaic: Mosaic, model, scales: Sequence[int] | None = None, sigma: float | None = None,
                **heatmap_kwargs) -> dict[str, float]:
    """ROC AUC of each class's query heatmap against that class's cells (the index is built once, then reused)."""
    from rsclip_geo.tasks.heatmap import heatmap

    out = {}
    for k, name in enumerate(mosaic.classes):
        heat = heatmap(mosaic.path, class_query(name), scales=scales, model=model, sigma=sigma, **heatmap_kwargs)
        out[name] = roc_auc(heat.array, truth_on_grid(mosaic, heat) == k)
    return out


def report(model_name: str | None, seeds: Sequence[int], scales: Sequence[int] | None, sigma: float | None,
           classes: Sequence[str], grid: tuple[int, int], out_dir: Path) -> dict:
    import time

    import rsclip_geo

    model = rsclip_geo.load_model(model_name, device="cpu")
    table: dict[str, list[float]] = {c: [] for c in classes}
    start = time.perf_counter()
    for seed in seeds:
        mosaic = build_mosaic(out_dir / f"aid_mosaic_{seed}.tif", classes, grid, seed)
        for name, auc in mosaic_aucs(mosaic, model, scales, sigma).items():
            table[name].append(auc)
    seconds = time.perf_counter() - start
    print(f"SeLo heatmap ROC AUC on AID mosaics ({grid[0]}x{grid[1]} cells of 150 px, held-out 'val' images), "
          f"model {model.bundle.name}, scales {list(scales) if scales else 'default'} px, "
          f"sigma {'auto' if sigma is None else sigma}, seeds {list(seeds)}, {seconds:.0f} s")
    print(f"{'class':<18} {'query':<34} " + " ".join(f"seed{s:<3}" for s in seeds) + "   mean")
    means = []
    for name in classes:
        m = float(np.mean(table[name]))
        means.append(m)
        print(f"{name:<18} {class_query(name)!r:<34} " + " ".join(f"{v:7.3f}" for v in table[name]) + f" {m:7.3f}")
    per_seed = [float(np.mean([table[c][i] for c in classes])) for i in range(len(seeds))]
    print(f"{'mean':<18} {'':<34} " + " ".join(f"{v:7.3f}" for v in per_seed) + f" {np.mean(means):7.3f}")
    return {"table": table, "per_seed_mean": per_seed, "mean": float(np.mean(means))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="Print the AUC table (default model unless --model).")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--scales", default="75,150", help="Window sizes in px ('' = the heatmap default).")
    parser.add_argument("--sigma", type=float, default=None, help="Smoothing sigma in cells (default: auto).")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES))
    parser.add_argument("--grid", default="4x4")
    parser.add_argument("--out", default=None, help="Folder for the mosaics (default: a temporary folder).")
    parser.add_argument("--write", metavar="PATH", help="Only write one mosaic GeoTIFF (seed = first of --seeds).")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    grid = tuple(int(v) for v in args.grid.lower().split("x"))
    scales = [int(s) for s in args.scales.split(",") if s.strip()] or None
    if args.write:
        m = build_mosaic(Path(args.write), classes, grid, seeds[0])
        print(f"wrote {m.path}: layout (class index per cell)\n{m.layout}\nclasses {list(m.classes)}")
        return 0
    if not args.report:
        parser.print_help()
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        report(args.model, seeds, scales, args.sigma, classes, grid, Path(args.out or tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
