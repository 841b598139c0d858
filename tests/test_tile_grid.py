"""Tile rasters on the scene's grid (issue 14, defects 1 and 2) and the edge default that covers the whole scene.

The NAIP demo scene is 934 x 723 px of 5 m: with 128 px (640 m) tiles it is 7.3 x 5.6 tiles, so a raster with
one pixel per stride hung 450 m past its east and 225 m past its south edge, and the 'pad' default skipped the
east column (70 % outside the scene) as "invalid pixels".
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from rsclip_geo.cli import main
from rsclip_geo.raster.tile_grid import on_scene_grid
from rsclip_geo.raster.tiling import TileSpec, plan_tiles

T = Affine(5, 0, 485899, 0, -5, 5209246)


@pytest.fixture
def naip(shared_data, tmp_path):
    src = shared_data / "scenes" / "naip_2020_rgbn_5m.tif"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return shutil.copy(src, tmp_path / "naip.tif")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _on_scene_grid(path, ras):
    """Raster ``ras`` lies on the scene's pixel grid, inside (here: exactly on) its bounds: (band 1, tags)."""
    with rasterio.open(path) as s, rasterio.open(ras) as r:
        assert r.crs == s.crs and r.transform == s.transform and (r.width, r.height) == (s.width, s.height)
        assert tuple(r.bounds) == tuple(s.bounds)
        return r.read(1), r.tags()


@pytest.mark.parametrize("edge", ["pad", "shift", "drop"])
def test_each_cell_takes_the_tile_that_owns_it(edge):
    plan = plan_tiles(100, 70, T, "EPSG:32618", TileSpec(size_px=30, edge=edge), 16)
    values = np.arange(plan.n_rows * plan.n_cols, dtype=np.float32).reshape(plan.n_rows, plan.n_cols)
    out, transform = on_scene_grid(plan, values, np.nan)
    assert out.shape == (70, 100) and transform == T  # the scene's own grid and bounds
    for y, x in [(0, 0), (29, 29), (30, 30), (59, 89), (69, 99), (65, 95), (45, 75)]:
        owners = [t for t in plan if t.row_off <= y < t.row_off + t.height and t.col_off <= x < t.col_off + t.width]
        if edge == "drop" and not owners:
            assert np.isnan(out[y, x])
            continue
        first = min(owners, key=lambda t: (t.row, t.col))  # where tiles overlap (shifted last tile): the first
        assert out[y, x] == values[first.row, first.col], (y, x)
    if edge == "drop":
        assert np.isnan(out[:, 90:]).all() and np.isnan(out[60:, :]).all() and not np.isnan(out[:60, :90]).any()
    else:
        assert not np.isnan(out).any()
        assert out[69, 99] == values[-1, -1]


def test_large_scenes_get_coarser_cells_spanning_the_exact_bounds():
    plan = plan_tiles(3000, 2000, T, "EPSG:32618", TileSpec(size_px=128), 16)
    values = np.ones((plan.n_rows, plan.n_cols), np.uint8)
    out, transform = on_scene_grid(plan, values, 255, max_cells=600_000)
    rows, cols = out.shape
    assert rows * cols <= 600_000 * 1.01 and (out == 1).all()
    assert transform @ (0, 0) == T @ (0, 0) and transform @ (cols, rows) == pytest.approx(T @ (3000, 2000))


def test_search_heatmap_on_the_demo_scene_grid(naip, tiny_bundle, tmp_path):
    """CLI search --heatmap on NAIP: on the scene grid, within bounds, scored up to the east and south edges."""
    hits, ras = tmp_path / "hits.gpkg", tmp_path / "scores.tif"
    r = run("search", naip, "green", "--model", tiny_bundle, "--device", "cpu", "--tile-size", 128, "-o", hits,
            "--heatmap", ras, "--top", 3, "-q")
    assert r.exit_code == 0, r.output
    grid, _ = _on_scene_grid(naip, ras)
    assert np.isfinite(grid[:, -1]).any() and np.isfinite(grid[-1, :]).any()  # the east and south strips
    with rasterio.open(naip) as s:
        valid = s.dataset_mask() > 0
    assert np.isfinite(grid[valid]).mean() > 0.99


def test_classify_default_covers_the_whole_demo_scene(naip, tiny_bundle, tmp_path):
    import geopandas as gpd

    out, ras = tmp_path / "labels.gpkg", tmp_path / "classes.tif"
    r = run("tile-classify", naip, "--labels", "red,green,blue", "--model", tiny_bundle, "--device", "cpu",
            "--tile-size", 128, "-o", out, "--raster", ras)
    assert r.exit_code == 0, r.output
    gdf = gpd.read_file(out)
    assert sorted(set(gdf["col"])) == list(range(8)) and sorted(set(gdf["row"])) == list(range(6))
    assert "48 tiles labelled, 0 skipped of 48" in r.output
    with rasterio.open(naip) as s:
        assert tuple(gdf.total_bounds) == tuple(s.bounds)  # the east column reaches the scene's edge
    classes, tags = _on_scene_grid(naip, ras)
    names = json.loads(tags["CLASS_NAMES"])
    assert (classes != 255).all()
    for row, y in ((0, 0), (5, -1)):  # the east strip: the shifted last column (tile col 7)
        east = gdf[(gdf["row"] == row) & (gdf["col"] == 7)]["label"].iloc[0]
        assert names[classes[y, -1]] == east


def test_pad_says_why_edge_tiles_are_skipped(naip, tiny_bundle, tmp_path):
    r = run("tile-classify", naip, "--labels", "red,green", "--model", tiny_bundle, "--device", "cpu",
            "--tile-size", 128, "--edge", "pad", "-o", tmp_path / "l.gpkg", "--raster", tmp_path / "c.tif")
    assert r.exit_code == 0, r.output
    # east column: 38 of 128 px inside (70 % outside); south row: 83 of 128 px inside (kept)
    assert "42 tiles labelled, 6 skipped (6 mostly outside the scene with edge 'pad') of 48" in r.output
    _on_scene_grid(naip, tmp_path / "c.tif")


def test_skip_reasons_split_outside_from_nodata():
    plan = plan_tiles(100, 70, T, None, TileSpec(size_px=30, edge="pad"), 16)  # 4 x 3 tiles, 10 px in the last
    kept = {(t.row, t.col) for t in plan if t.col < 3} - {(0, 0)}
    assert plan.skip_reasons(kept, 0.5) == (3, 1)  # col 3: 2/3 outside; (0, 0): dropped for its pixels
    assert plan.inside_fraction(plan.tile(2, 3)) == pytest.approx(10 * 10 / 900)
