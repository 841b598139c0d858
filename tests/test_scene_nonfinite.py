"""Float rasters with NaN (no nodata declared) and +-inf pixels: non-finite pixels are invalid and the stretch
uses finite values only (issue 15, defect 5)."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

import rsclip_geo
from rsclip_geo.raster.scene import Scene
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE, RED], [BLUE, RED, GREEN, GREEN], [GREEN, BLUE, RED, BLUE]]
NAMES = {RED: "red", GREEN: "green", BLUE: "blue"}
BLOCK = 32


def _float_scene(tmp_path):
    """Reflectance-like float32 (0..0.3), no nodata; tile (0, 0) all NaN, half of tile (1, 1) NaN, ~4 % +-inf."""
    data = colour_blocks(LAYOUT, BLOCK).astype(np.float32) * (0.3 / 255)
    data[:, :BLOCK, :BLOCK] = np.nan                      # a whole tile
    data[:, BLOCK:BLOCK + 24, BLOCK:2 * BLOCK] = np.nan   # 3/4 of a tile: more than max_invalid 0.5
    rng = np.random.default_rng(0)
    inf = rng.random(data.shape[1:]) < 0.04
    inf[:2 * BLOCK, :2 * BLOCK] = False
    data[0][inf] = np.inf
    data[1][inf] = -np.inf
    return write_geotiff(tmp_path / "float.tif", data), inf


def test_non_finite_pixels_are_invalid_and_stretch_is_finite(tmp_path):
    path, inf = _float_scene(tmp_path)
    with Scene(path) as s:
        assert np.isfinite(s.stretch.low).all() and np.isfinite(s.stretch.high).all()
        assert all(hi > lo for lo, hi in zip(s.stretch.low, s.stretch.high))
        chw, valid = s.read_chw(Window(0, 0, 4 * BLOCK, 3 * BLOCK))
    expected = ~inf
    expected[:BLOCK, :BLOCK] = False
    expected[BLOCK:BLOCK + 24, BLOCK:2 * BLOCK] = False
    assert (valid == expected).all()
    # a valid red pixel is stretched to a red pixel, not black
    r, g, b = chw[:, 2 * BLOCK + 5, 2 * BLOCK + 5].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_tiles_get_finite_distinct_scores_and_nan_tiles_are_skipped(tmp_path, tiny_model):
    path, _ = _float_scene(tmp_path)
    result = rsclip_geo.tile_classify(path, ["red", "green", "blue"], model=tiny_model,
                                      tile=TileSpec(size_px=BLOCK))
    gdf, summary = result.frame, result.summary
    assert summary.tiles_total == 12 and summary.tiles_skipped == 2 and len(gdf) == 10
    assert {(0, 0), (1, 1)}.isdisjoint(zip(gdf["row"], gdf["col"]))
    assert np.isfinite(gdf["score"]).all()
    assert gdf["score"].nunique() > 1
    got = {(r, c): lab for r, c, lab in zip(gdf["row"], gdf["col"], gdf["label"])}
    assert got == {(r, c): NAMES[LAYOUT[r][c]] for r in range(3) for c in range(4) if (r, c) not in {(0, 0), (1, 1)}}
    assert (gdf["valid_frac"] > 0.9).all()


def test_all_non_finite_scene_is_an_error(tmp_path):
    data = np.full((3, 40, 40), np.nan, np.float32)
    data[0, ::2] = np.inf
    path = write_geotiff(tmp_path / "nan.tif", data)
    with pytest.raises(rsclip_geo.errors.RasterInputError, match="every pixel is invalid"):
        Scene(path)
