"""Scenes: band mapping, validity (nodata / mask / alpha / zero edges), per-scene stretch, bad files, real scenes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from pyproj import CRS, Proj, Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely.geometry import box
from shapely.ops import unary_union

from rsclip_geo.errors import RasterInputError
from rsclip_geo.raster.scene import NotGeoreferencedSceneWarning, Scene
from rsclip_geo.raster.tiling import TileSpec, pixel_size_m, plan_tiles
from tests.utils.rasters import set_colorinterp, truncate_file, write_geotiff, write_with_mask

RED, GREEN, BLUE = 200, 100, 50


def full(scene: Scene):
    return scene.read_rgb(Window(0, 0, scene.width, scene.height))


def const_bands(values, h=12, w=10, dtype=np.uint8):
    return np.stack([np.full((h, w), v, dtype) for v in values])


# ---- band defaults --------------------------------------------------------------------------------------------------
def test_three_bands_as_stored(tmp_path):
    p = set_colorinterp(write_geotiff(tmp_path / "a.tif", const_bands((RED, GREEN, BLUE))), "gray", "undefined",
                        "undefined")
    with Scene(p) as s:
        assert s.bands == (1, 2, 3)
        rgb, valid = full(s)
    assert rgb.shape == (12, 10, 3) and rgb.dtype == np.uint8 and valid.all()
    assert (rgb == (RED, GREEN, BLUE)).all()


def test_four_band_rgbn_uses_first_three(tmp_path):
    p = set_colorinterp(write_geotiff(tmp_path / "rgbn.tif", const_bands((RED, GREEN, BLUE, 250))),
                        "gray", "undefined", "undefined", "undefined")
    with Scene(p) as s:
        assert s.bands == (1, 2, 3)
        assert (full(s)[0] == (RED, GREEN, BLUE)).all()


def test_one_band_replicated(tmp_path):
    band = (np.arange(120, dtype=np.uint8).reshape(12, 10) + 1)
    with Scene(write_geotiff(tmp_path / "pan.tif", band)) as s:
        assert s.bands == (1,)
        rgb, valid = full(s)
    for k in range(3):
        assert (rgb[..., k] == band).all()
    assert valid.all()


@pytest.mark.parametrize("stored,ci,expected_bands", [
    ((BLUE, GREEN, RED), ("blue", "green", "red"), (3, 2, 1)),
    ((GREEN, RED, BLUE), ("green", "red", "blue"), (2, 1, 3)),
    ((250, BLUE, GREEN, RED), ("undefined", "blue", "green", "red"), (4, 3, 2)),
])
def test_colour_interpretation_honoured(tmp_path, stored, ci, expected_bands):
    p = set_colorinterp(write_geotiff(tmp_path / "ci.tif", const_bands(stored)), *ci)
    with Scene(p) as s:
        assert s.bands == expected_bands
        assert (full(s)[0] == (RED, GREEN, BLUE)).all()


def test_two_bands_need_explicit_bands(tmp_path):
    p = write_geotiff(tmp_path / "two.tif", const_bands((RED, GREEN)))
    with pytest.raises(RasterInputError) as err:
        Scene(p)
    assert "two.tif" in str(err.value) and "2 bands" in str(err.value) and "--bands" in str(err.value)
    with Scene(p, bands=[2]) as s:  # --bands resolves it
        assert (full(s)[0] == GREEN).all()


def test_bands_reorder_bgr_file(tmp_path):
    p = set_colorinterp(write_geotiff(tmp_path / "bgr.tif", const_bands((BLUE, GREEN, RED))), "gray", "undefined",
                        "undefined")
    with Scene(p) as s:  # nothing says it is BGR: read as stored
        assert (full(s)[0] == (BLUE, GREEN, RED)).all()
    with Scene(p, bands=[3, 2, 1]) as s:
        assert s.bands == (3, 2, 1)
        assert (full(s)[0] == (RED, GREEN, BLUE)).all()


@pytest.mark.parametrize("count,bands,match", [
    (3, [1, 2, 5], r"band 5 does not exist \(the raster has 3 bands"),
    (3, [0, 1, 2], r"band 0 does not exist \(the raster has 3 bands"),
    (1, [2], r"band 2 does not exist \(the raster has 1 band,"),
    (4, [1, 2], r"1 or 3 bands"),
])
def test_bad_band_index(tmp_path, count, bands, match):
    p = write_geotiff(tmp_path / "b.tif", const_bands((RED, GREEN, BLUE, 9)[:count]))
    with pytest.raises(RasterInputError, match=match) as err:
        Scene(p, bands=bands)
    assert "b.tif" in str(err.value)


# ---- validity -------------------------------------------------------------------------------------------------------
def test_nodata_value_masks_and_zeros_stay_valid(tmp_path):
    data = const_bands((RED, GREEN, BLUE))
    data[:, :4, :] = 7          # declared nodata in every band
    data[:, 8, 3] = 0           # true black pixel: valid because a nodata value is declared
    p = write_geotiff(tmp_path / "nd.tif", data, nodata=7)
    expected = np.ones((12, 10), bool)
    expected[:4] = False
    with Scene(p) as s:
        assert s.zero_invalid is False
        rgb, valid = full(s)
    assert (valid == expected).all()
    assert tuple(rgb[8, 3]) == (0, 0, 0)


def test_internal_mask_masks(tmp_path):
    data = const_bands((RED, GREEN, BLUE))
    data[:, 10, :] = 0  # zeros inside the valid area stay valid: a mask is declared
    mask = np.ones((12, 10), bool)
    mask[:, 6:] = False
    mask[2, 1] = False
    p = write_with_mask(tmp_path / "m.tif", data, mask)
    with rasterio.open(p) as ds:
        assert all(rasterio.enums.MaskFlags.per_dataset in f for f in ds.mask_flag_enums)
    with Scene(p) as s:
        assert s.zero_invalid is False
        _, valid = full(s)
        assert (valid == mask).all()
        _, valid = s.read_rgb(Window(4, 0, 4, 4))  # a window across the mask edge
        assert (valid == mask[0:4, 4:8]).all()


def test_alpha_band_masks(tmp_path):
    data = const_bands((RED, GREEN, BLUE, 255))
    data[3, :, :5] = 0
    p = write_geotiff(tmp_path / "alpha.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(p) as ds:
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    with Scene(p) as s:
        assert s.bands == (1, 2, 3)
        rgb, valid = full(s)
    assert (valid == (data[3] > 0)).all()
    assert (rgb[valid] == (RED, GREEN, BLUE)).all()


def _zero_scene(tmp_path, nodata=None):
    data = const_bands((RED, GREEN, BLUE))
    data[:, 0, :] = 0          # zero-filled edge row
    data[:, 5, 5] = (0, 9, 0)  # zero in some bands only: a real pixel
    data[:, 6, 6] = 7          # equals the nodata value in the 'declared' variant
    return write_geotiff(tmp_path / f"z{nodata}.tif", data, nodata=nodata)


def test_zero_invalid_auto_without_nodata(tmp_path):
    p = _zero_scene(tmp_path)
    expected = np.ones((12, 10), bool)
    expected[0] = False
    with Scene(p) as s:
        assert s.zero_invalid is True
        assert (full(s)[1] == expected).all()
    with Scene(p, zero_invalid=False) as s:
        assert full(s)[1].all()


def test_zero_invalid_with_declared_nodata(tmp_path):
    p = _zero_scene(tmp_path, nodata=7)
    only_nodata = np.ones((12, 10), bool)
    only_nodata[6, 6] = False
    with Scene(p) as s:  # auto: zeros are valid data
        assert (full(s)[1] == only_nodata).all()
    both = only_nodata.copy()
    both[0] = False
    with Scene(p, zero_invalid=True) as s:
        assert (full(s)[1] == both).all()


def test_all_nodata_scene_is_an_error(tmp_path):
    p = write_geotiff(tmp_path / "empty.tif", np.full((3, 8, 8), 5, np.uint8), nodata=5)
    with pytest.raises(RasterInputError, match=r"empty\.tif.*every pixel is invalid"):
        Scene(p)
    p = write_geotiff(tmp_path / "black.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(RasterInputError, match=r"black\.tif.*0 in all selected bands"):
        Scene(p)
    with Scene(p, zero_invalid=False) as s:  # forced: black is data
        assert full(s)[1].all()


# ---- stretch --------------------------------------------------------------------------------------------------------
def _ramp_scene(tmp_path):
    """uint16, 100x100: band 1 = 1000..10999 row-major, band 2 = band 1 + 20000, band 3 = 2 * band 1."""
    v = (1000 + np.arange(10000, dtype=np.uint16)).reshape(100, 100)
    data = np.stack([v, v + 20000, 2 * v]).astype(np.uint16)
    return write_geotiff(tmp_path / "ramp.tif", data), data


def _expected_uint8(values, low, high):
    x = (values.astype(np.float64) - low) * 255.0 / (high - low)
    return np.clip(np.floor(x + 0.5), 0, 255), np.abs(x - np.floor(x) - 0.5) < 1e-3


def test_uint16_percentile_stretch_exact(tmp_path):
    p, data = _ramp_scene(tmp_path)
    # numpy 'linear' percentiles of 10000 consecutive integers starting at 1000:
    # 2 %: position 0.02 * 9999 = 199.98 -> 1199.98; 98 %: 0.98 * 9999 = 9799.02 -> 10799.02
    low = (1199.98, 21199.98, 2399.96)
    high = (10799.02, 30799.02, 21598.04)
    with Scene(p) as s:
        np.testing.assert_allclose(s.stretch.low, low, rtol=1e-9)
        np.testing.assert_allclose(s.stretch.high, high, rtol=1e-9)
        rgb, valid = full(s)
    assert valid.all()
    for k in range(3):
        want, near_half = _expected_uint8(data[k], low[k], high[k])
        got = rgb[..., k]
        assert (got[~near_half] == want[~near_half]).all()
        assert np.abs(got.astype(int) - want)[near_half].max(initial=0) <= 1
    # ends: below 2 % -> 0, above 98 % -> 255
    assert rgb[0, 0, 0] == 0 and rgb[99, 99, 0] == 255
    assert (rgb[0, :, 0] == 0).all() and (rgb[99, 90:, 0] == 255).all()


def test_stretch_is_per_scene_not_per_tile(tmp_path):
    p, data = _ramp_scene(tmp_path)
    with Scene(p) as s:
        top, _ = s.read_rgb(Window(0, 0, 100, 50))     # values 1000..5999 only
        mid, _ = s.read_rgb(Window(0, 25, 100, 50))    # overlaps rows 25..49
        stretch = s.stretch
    # the same pixel reads the same in both tiles
    assert (top[25:50] == mid[0:25]).all()
    # the top tile is not stretched to its own range: 5999 -> (5999 - 1199.98) * 255 / 9599.04 = 127.49 -> 127
    assert top[..., 0].max() == 127
    assert top[..., 0].min() == 0
    assert stretch.low[0] == pytest.approx(1199.98)


def test_stretch_none_and_bad_name(tmp_path):
    p, _ = _ramp_scene(tmp_path)
    with Scene(p, stretch="none") as s:
        assert (full(s)[0] == 255).all()  # every value >= 1000 clips at 255
    with pytest.raises(ValueError, match="stretch"):
        Scene(p, stretch="minmax")


def test_uint8_auto_is_not_stretched(tmp_path):
    band = np.full((3, 10, 10), 100, np.uint8)
    band[:, 0, 0] = (60, 70, 80)
    with Scene(write_geotiff(tmp_path / "u8.tif", band)) as s:
        rgb, _ = full(s)
    assert tuple(rgb[0, 0]) == (60, 70, 80) and tuple(rgb[5, 5]) == (100, 100, 100)


# ---- windows past the edge ------------------------------------------------------------------------------------------
def test_window_past_the_edge_is_invalid_there(tmp_path):
    with Scene(write_geotiff(tmp_path / "e.tif", const_bands((RED, GREEN, BLUE)))) as s:
        rgb, valid = s.read_rgb(Window(6, 8, 8, 8))  # 4 of 8 columns and 4 of 8 rows inside
        assert valid.sum() == 16 and valid[:4, :4].all()
        assert (rgb[:4, :4] == (RED, GREEN, BLUE)).all()
        rgb, valid = s.read_rgb(Window(-4, -6, 8, 8))  # hangs over the top-left corner
        assert valid.sum() == 8 and valid[6:, 4:].all()
        assert (rgb[6:, 4:] == (RED, GREEN, BLUE)).all() and (rgb[:6] == 0).all()
        rgb, valid = s.read_rgb(Window(20, 20, 4, 4))  # wholly outside
        assert rgb.shape == (4, 4, 3) and not valid.any()


# ---- bad files ------------------------------------------------------------------------------------------------------
def _cli_no_output(tmp_path, scene, tiny_bundle, name):
    from rsclip_geo.cli import main

    out = tmp_path / "out.gpkg"
    before = sorted(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "red,green", "--model",
                                       str(tiny_bundle), "--device", "cpu", "-q", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert name in result.output and "Traceback" not in result.output
    assert sorted(tmp_path.iterdir()) == before  # no output and no temp file


def test_text_file_named_tif(tmp_path, tiny_bundle):
    p = tmp_path / "notes.tif"
    p.write_text("this is not a raster\n")
    with pytest.raises(RasterInputError, match=r"notes\.tif.*not a readable raster"):
        Scene(p)
    _cli_no_output(tmp_path, p, tiny_bundle, "notes.tif")


@pytest.mark.parametrize("keep,match", [(0.5, "truncated or corrupt"), (64, "not a readable raster")])
def test_truncated_geotiff(tmp_path, tiny_bundle, keep, match):
    rng = np.random.default_rng(1)
    p = write_geotiff(tmp_path / "cut.tif", rng.integers(1, 255, (3, 256, 256), dtype=np.uint8), tiled=True,
                      blockxsize=64, blockysize=64, compress="deflate")
    with Scene(p):
        pass  # valid before cutting
    truncate_file(p, keep)  # half: header intact, pixels missing; 64 bytes: header cut
    with pytest.raises(RasterInputError, match=r"cut\.tif.*" + match):
        Scene(p)
    _cli_no_output(tmp_path, p, tiny_bundle, "cut.tif")


def test_missing_file(tmp_path):
    with pytest.raises(RasterInputError, match=r"nothere\.tif.*does not exist"):
        Scene(tmp_path / "nothere.tif")


def test_no_crs_warns_and_uses_pixel_coordinates(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        p = write_geotiff(tmp_path / "plain.tif", const_bands((RED, GREEN, BLUE), h=24, w=32), crs=None,
                          transform=Affine.identity())
    with pytest.warns(NotGeoreferencedSceneWarning, match="plain.tif"):
        s = Scene(p)
    with s:
        assert s.crs is None
        plan = plan_tiles(s.width, s.height, s.transform, s.crs, TileSpec(size_px=8), 16, source=str(p))
    assert plan.crs is None
    assert plan.footprint(plan.tile(1, 2)).equals(box(16, 8, 24, 16))  # x = column, y = row
    with pytest.raises(RasterInputError, match=r"plain\.tif.*no CRS"):
        plan_tiles(s.width, s.height, s.transform, s.crs, TileSpec(size_m=100), 16, source=str(p))


# ---- real scenes ----------------------------------------------------------------------------------------------------
REAL = [  # file, tile size m, CRS, nominal pixel size, tile px, bands used by default
    ("landsat8_224078_bgr.tif", 3840.0, 32621, 30.0, 128, (1, 2, 3)),
    ("naip_2020_rgbn_5m.tif", 320.0, 26914, 5.0, 64, (1, 2, 3)),
    ("rgbn_5m.tif", 320.0, 32618, 5.0, 64, (1, 2, 3)),
    ("spacenet_pan_050m.tif", 32.0, 32616, 0.5, 64, (1,)),
]


@pytest.mark.parametrize("name,size_m,epsg,res,tile_px,bands", REAL)
def test_real_scene_plans(shared_data, tiny_model, name, size_m, epsg, res, tile_px, bands):
    from rsclip_geo.tasks.classify import tile_classify

    path = shared_data / "scenes" / name
    with rasterio.open(path) as ds:
        bounds, width, height, crs = ds.bounds, ds.width, ds.height, CRS.from_user_input(ds.crs)
    assert crs.to_epsg() == epsg
    with Scene(path) as s:
        assert s.bands == bands
        # ground pixel = grid pixel / projection scale factor at the scene centre (independent of geodesics)
        cx, cy = s.transform @ (width / 2, height / 2)
        lon, lat = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(cx, cy)
        factors = Proj(crs).get_factors(lon, lat)
        px, py = pixel_size_m(s.transform, s.crs, width, height)
        assert px == pytest.approx(res / factors.parallel_scale, rel=1e-6)
        assert py == pytest.approx(res / factors.meridional_scale, rel=1e-6)
        assert px == pytest.approx(res, rel=1e-3) and py == pytest.approx(res, rel=1e-3)

        pad = plan_tiles(width, height, s.transform, s.crs, TileSpec(size_m=size_m, edge="pad"), 16, source=name)
        assert (pad.tile_width, pad.tile_height) == (tile_px, tile_px)
        assert (pad.n_cols, pad.n_rows) == (math.ceil(width / tile_px), math.ceil(height / tile_px))
        union = unary_union([pad.footprint(t) for t in pad])
        scene_box = box(*bounds)
        assert union.equals(scene_box)
        assert union.area == pytest.approx(width * height * res * res, rel=1e-12)

        drop = plan_tiles(width, height, s.transform, s.crs, TileSpec(size_m=size_m, edge="drop"), 16, source=name)
        nc, nr = width // tile_px, height // tile_px
        assert (drop.n_cols, drop.n_rows) == (nc, nr)
        union = unary_union([drop.footprint(t) for t in drop])
        assert union.equals(box(bounds.left, bounds.top - nr * tile_px * res, bounds.left + nc * tile_px * res,
                                bounds.top))

    result = tile_classify(path, "red,green,blue", model=tiny_model, tile=TileSpec(size_m=size_m, edge="pad"))
    gdf = result.frame
    assert gdf.crs == crs
    summary = result.summary
    assert summary.tiles_total == len(pad)
    assert summary.tiles_encoded + summary.tiles_skipped == len(pad) == summary.tiles_total
    if name == "landsat8_224078_bgr.tif":
        _check_landsat_edges(path, result, pad)


def _check_landsat_edges(path, result, plan):
    """Tiles on the zero-filled collar are skipped: recount them from the pixels with numpy."""
    with rasterio.open(path) as ds:
        valid = np.any(ds.read() != 0, axis=0)
    t = plan.tile_width
    h, w = valid.shape
    padded = np.zeros((plan.n_rows * t, plan.n_cols * t), bool)  # 'pad': pixels outside count as invalid
    padded[:h, :w] = valid
    frac = padded.reshape(plan.n_rows, t, plan.n_cols, t).mean(axis=(1, 3))
    skip = (frac == 0) | (1 - frac > 0.5)
    assert 20 < skip.sum() < len(plan)  # the collar really is there
    gdf, summary = result.frame, result.summary
    assert summary.tiles_skipped == int(skip.sum())
    kept = {(int(r), int(c)) for r, c in zip(*np.nonzero(~skip))}
    assert set(zip(gdf["row"].tolist(), gdf["col"].tolist())) == kept
    got = {(r, c): f for r, c, f in zip(gdf["row"], gdf["col"], gdf["valid_frac"])}
    for (r, c) in kept:
        assert got[(r, c)] == pytest.approx(frac[r, c], abs=1e-6)


@pytest.mark.parametrize("nodata", [float("nan"), -9999.0])
def test_float_nodata_masks_match_gdal(tmp_path, nodata):
    """Masks computed from the pixels (NaN or a value nodata) equal what GDAL's read_masks says."""
    data = np.random.default_rng(3).uniform(0, 1000, (3, 40, 40)).astype(np.float32)
    data[:, :10, :] = nodata
    data[1, 20:25, 20:25] = nodata  # one band only: the pixel is invalid
    path = write_geotiff(tmp_path / "f.tif", data, nodata=nodata)
    with Scene(path) as scene, rasterio.open(path) as ds:
        _, valid = scene.read_rgb(Window(0, 0, 40, 40))
        expected = np.all(ds.read_masks([1, 2, 3]) > 0, axis=0)
    np.testing.assert_array_equal(valid, expected)
    assert not valid[:10].any() and not valid[20:25, 20:25].any() and valid[10:20].all()


def test_scene_plan_is_its_own_grid_and_names_the_scene(tmp_path):
    path = write_geotiff(tmp_path / "grid.tif", np.full((3, 100, 70), 90, np.uint8))
    with Scene(path) as sc:
        plan = sc.plan(TileSpec(size_px=32, overlap=0.5), 224)
        assert plan == plan_tiles(70, 100, sc.transform, sc.crs, TileSpec(size_px=32, overlap=0.5), 224)
        assert (plan.tile_width, plan.stride_x, plan.scene_width, plan.scene_height) == (32, 16, 70, 100)
        assert sc.plan(TileSpec(), 48).tile_width == 48  # the model's input size when the spec gives none
        with pytest.raises(RasterInputError, match=r"grid\.tif: a 0\.01 m tile"):
            sc.plan(TileSpec(size_m=0.01), 224)
