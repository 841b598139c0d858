"""Per-tile counting: RemoteCount prompt scoring per tile, outputs, index reuse, pixel-coordinate images,
clear errors, and the evaluation script (metrics on hand-made predictions, end to end on a real DOTA chip)."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from PIL import Image

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.errors import LabelError
from rsclip_geo.evaluation.counting import count_metrics
from rsclip_geo.embeddings.index import sidecar_path
from rsclip_geo.raster.scene import NotGeoreferencedSceneWarning
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

REPO = Path(__file__).resolve().parents[1]
LAYOUT = [[RED, GREEN, BLUE], [BLUE, BLUE, RED]]
# With the tiny colour model only colour words carry meaning, so colour words as "numerals" make the
# count prompts separable: "a satellite photo of red things" = 1, green = 2, blue = 3.
NUMERALS = ["red", "green", "blue"]
EXPECTED = {(0, 0): 1, (0, 1): 2, (0, 2): 3, (1, 0): 3, (1, 1): 3, (1, 2): 1}


def load_count_eval():
    spec = importlib.util.spec_from_file_location("count_eval", REPO / "bench" / "count_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["count_eval"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_counts_per_tile(scene, tiny_model):
    counts = rsclip_geo.count_objects(scene, "thing", max_count=3, model=tiny_model, tile=TileSpec(size_px=32),
                                      numerals=NUMERALS)
    gdf = counts.frame
    assert list(gdf.columns) == ["row", "col", "count", "probability", "runner_up", "runner_up_probability",
                                 "valid_frac", "geometry"]
    assert {(r, c): n for r, c, n in zip(gdf["row"], gdf["col"], gdf["count"])} == EXPECTED
    assert (gdf["runner_up"] != gdf["count"]).all()
    assert (gdf["probability"] > gdf["runner_up_probability"]).all() and (gdf["probability"] <= 1).all()
    assert counts.total == sum(EXPECTED.values()) == 13 and counts.object == "thing"
    assert counts.max_count == 3 and len(counts) == 6 and not counts.reused_index
    s = counts.summary
    assert (s.tiles_total, s.tiles_encoded, s.tiles_skipped) == (6, 6, 0) and s.extra["total"] == 13
    assert counts.plan.grid_transform == Affine(320.0, 0.0, 500000.0, 0.0, -320.0, 5000000.0)
    assert [(counts.plan.tile(r, c).col_off, counts.plan.tile(r, c).row_off)
            for r, c in zip(gdf["row"], gdf["col"])] == [(32 * c, 32 * r) for r in range(2) for c in range(3)]
    assert gdf.crs.to_epsg() == 32633
    tile = gdf[(gdf["row"] == 1) & (gdf["col"] == 2)].geometry.iloc[0]
    assert tile.bounds == (500640.0, 4999360.0, 500960.0, 4999680.0)
    # RemoteCount's own words ('one', 'two', ...) mean nothing to the colour model: a flat, tied distribution,
    # and ties go to the smaller count
    flat = rsclip_geo.count_objects(scene, "red car", max_count=4, model=tiny_model, tile=TileSpec(size_px=32)).frame
    assert (flat["count"] == 1).all() and np.allclose(flat["probability"], 0.25)


def test_count_reuses_the_index(scene, tiny_bundle, tiny_model):
    r = run("index", scene, "--model", tiny_bundle, "--tile-size", 32, "-q")
    assert r.exit_code == 0, r.output
    mtime = sidecar_path(scene).stat().st_mtime_ns
    counts = rsclip_geo.count_objects(scene, "thing", max_count=3, model=tiny_model, tile=TileSpec(size_px=32),
                                      numerals=NUMERALS)
    gdf = counts.frame
    assert counts.reused_index and sidecar_path(scene).stat().st_mtime_ns == mtime
    assert {(r, c): n for r, c, n in zip(gdf["row"], gdf["col"], gdf["count"])} == EXPECTED
    other = rsclip_geo.count_objects(scene, "thing", max_count=3, model=tiny_model, tile=TileSpec(size_px=16),
                                     numerals=NUMERALS)
    assert not other.reused_index and len(other) == len(other.frame) == 24


def test_cli_count_outputs_and_errors(scene, tiny_bundle, tmp_path):
    import geopandas as gpd

    out = tmp_path / "counts.gpkg"
    base = ("count", scene, "red car", "--model", tiny_bundle, "--tile-size", 32)
    r = run(*base, "--max", 5, "-o", out, "--total")
    assert r.exit_code == 0, r.output
    assert "total red car: 6 (sum over 6 tiles)" in r.output  # flat distribution -> 1 per tile
    gdf = gpd.read_file(out)
    assert len(gdf) == 6 and gdf.crs.to_epsg() == 32633 and set(gdf["count"]) == {1}
    r = run(*base, "-o", tmp_path / "counts.parquet", "-q")
    assert r.exit_code == 0 and (tmp_path / "counts.parquet").exists()
    r = run(*base, "--max", 0, "-o", tmp_path / "x.gpkg")
    assert r.exit_code == 2 and "--max" in r.output and "0 is not in the range" in r.output
    r = run("count", scene, "  ", "--model", tiny_bundle, "-o", tmp_path / "x.gpkg")
    assert r.exit_code == 2 and "empty object name" in r.output
    r = run(*base, "-o", out)
    assert r.exit_code == 1 and "already exists" in r.output
    r = run(*base, "-o", tmp_path / "x.csv")
    assert r.exit_code == 1 and "unsupported output extension" in r.output
    assert not (tmp_path / "x.gpkg").exists()
    with pytest.raises(LabelError, match="empty object name"):
        rsclip_geo.count_objects(scene, "", model=tiny_bundle)
    for bad in (0, 10**9):  # 10^9 prompts once asked for 7.45 GiB at once
        with pytest.raises(rsclip_geo.OptionError, match="max_count must be 1-1000"):
            rsclip_geo.count_objects(scene, "car", max_count=bad, model=tiny_bundle)


# ---- a real DOTA chip (no georeferencing: pixel coordinates) ---------------------------------------------------
def dota_chip(shared_data: Path, folder: Path, chip: int = 128, object_name: str = "large-vehicle") -> int:
    """Crop the first P1888 chip with 1..10 ``object_name`` boxes into a one-image DOTA folder; its true count."""
    from training.data.b2c import boxes_in_window, chip_windows
    from training.data.boxes import read_dota

    labels = read_dota(shared_data / "dota" / "labelTxt" / "P1888.txt")
    image = Image.open(shared_data / "dota" / "images" / "P1888.png").convert("RGB")
    for window in chip_windows(image.width, image.height, chip):
        inside = boxes_in_window(labels.boxes, window)
        n = sum(b.name == object_name for b in inside)
        if 1 <= n <= 10:
            break
    (folder / "images").mkdir(parents=True)
    (folder / "labelTxt").mkdir()
    image.crop(window).save(folder / "images" / "chip.png")
    lines = ["imagesource:GoogleEarth", f"gsd:{labels.gsd}"]
    for b in inside:
        lines.append(" ".join(f"{v:.1f}" for xy in b.polygon for v in xy) + f" {b.name} 0")
    (folder / "labelTxt" / "chip.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n


def test_png_without_crs_counts_in_pixel_coordinates(shared_data, tmp_path, tiny_model):
    dota_chip(shared_data, tmp_path / "dota")
    with pytest.warns(NotGeoreferencedSceneWarning, match="pixel coordinates"):
        gdf = rsclip_geo.count_objects(tmp_path / "dota" / "images" / "chip.png", "large vehicle", model=tiny_model,
                                       tile=TileSpec(size_px=64)).frame
    assert gdf.crs is None and len(gdf) == 4
    assert sorted(g.bounds for g in gdf.geometry)[0] == (0.0, 0.0, 64.0, 64.0)


def test_count_metrics_on_hand_made_predictions():
    m = count_metrics([1, 2, 3, 4, 10], [1, 3, 3, 7, 9])
    assert (m.n, m.exact, m.within1, m.mae) == (5, 0.4, 0.8, 1.0)
    assert m.baseline_count == 3 and m.baseline_mae == pytest.approx((2 + 1 + 0 + 1 + 7) / 5)
    ev = load_count_eval()
    windows = [(0, 0, 10, 10), (10, 0, 20, 10), (5, 5, 15, 15)]
    pts = np.array([[0, 0], [9.9, 9.9], [10, 0], [10, 10], [14.9, 5], [20, 5]])
    assert ev.points_per_window(pts, windows).tolist() == [2, 2, 3]  # half-open: (20, 5) is in none
    lines = ev.summarize([ev.CountRows("A", "a.png", "car", np.array([1, 2]), np.array([1, 4]), 3),
                          ev.CountRows("B", "b.tif", "house", np.array([5]), np.array([4]), 0)])
    by = {(ln["source"], ln["object"]): ln for ln in lines}
    assert by[("A", "car")]["exact"] == 0.5 and by[("A", "car")]["left_out"] == 3
    assert by[("all", "all")]["tiles"] == 3 and by[("all", "all")]["mae"] == pytest.approx(1.0)
    assert by[("all", "all")]["within1"] == pytest.approx(2 / 3)


def test_polygon_centroids_to_pixels(tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    scene = write_geotiff(tmp_path / "s.tif", np.zeros((1, 20, 30), np.uint8),
                          transform=Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0))
    gpd.GeoDataFrame(geometry=[box(1001, 1995, 1002, 1996)], crs="EPSG:32633").to_file(tmp_path / "p.geojson")
    ev = load_count_eval()
    np.testing.assert_allclose(ev.polygon_centroids_px(tmp_path / "p.geojson", scene), [[3.0, 9.0]])


def test_count_eval_script_on_one_dota_chip(shared_data, tmp_path, tiny_bundle, capsys):
    n = dota_chip(shared_data, tmp_path / "dota")
    ev = load_count_eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedSceneWarning)
        rc = ev.main(["--model", str(tiny_bundle), "--dota-dir", str(tmp_path / "dota"), "--sources", "dota",
                      "--dota-chip", "128", "--json", str(tmp_path / "eval.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "DOTA" in text and "large-vehicle" in text and "model tiny-rgb" in text
    result = json.loads((tmp_path / "eval.json").read_text())
    rows = {r["object"]: r for r in result["rows"]}
    assert rows["large-vehicle"]["true"] == [n] and rows["large-vehicle"]["pred"] == [1]
    line = next(ln for ln in result["table"] if ln["object"] == "large-vehicle")
    assert line["tiles"] == 1 and line["mae"] == pytest.approx(n - 1)
    assert not list((tmp_path / "dota" / "images").glob("*.parquet"))  # evaluation never writes an index
