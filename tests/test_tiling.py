"""Tile plans: counts per edge policy, footprints on the map (north-up, rotated, geographic), metres -> pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS, Geod
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from rsclip_geo.errors import RasterInputError
from rsclip_geo.raster.tiling import TileSpec, pixel_size_m, plan_tiles

UTM_30M = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)


def cover_count(n: int, t: int, s: int) -> int:
    """Tiles needed to cover n pixels, walking tile starts 0, s, 2s, ... until the last tile reaches the end."""
    start, count = 0, 1
    while start + t < n:
        start += s
        count += 1
    return count


def fit_count(n: int, t: int, s: int) -> int:
    """Tiles that fit wholly inside n pixels, starts 0, s, 2s, ..."""
    return sum(1 for start in range(0, n, s) if start + t <= n)


# ---- counts ---------------------------------------------------------------------------------------------------------
# (n, tile, overlap, drop, pad/shift) worked out by hand
HAND_COUNTS = [
    (100, 25, 0.0, 4, 4),   # exact multiple
    (101, 25, 0.0, 4, 5),   # one pixel over
    (99, 25, 0.0, 3, 4),    # one pixel short
    (25, 25, 0.0, 1, 1),    # exactly one tile
    (26, 25, 0.0, 1, 2),
    (100, 20, 0.5, 9, 9),   # stride 10: starts 0..80 fit exactly
    (105, 20, 0.5, 9, 10),  # start 90 would end at 110 > 105
    (101, 20, 0.5, 9, 10),
    (100, 32, 0.25, 3, 4),  # stride 24: 0,24,48 fit (48+32=80); pad adds 72 (72+32=104 covers the end)
]


@pytest.mark.parametrize("n,t,overlap,n_drop,n_pad", HAND_COUNTS)
def test_counts_by_hand(n, t, overlap, n_drop, n_pad):
    for edge, expected in (("drop", n_drop), ("pad", n_pad), ("shift", n_pad)):
        plan = plan_tiles(n, n, UTM_30M, "EPSG:32633", TileSpec(size_px=t, overlap=overlap, edge=edge), 16)
        assert (plan.n_rows, plan.n_cols) == (expected, expected), edge
        assert len(plan) == expected * expected
        assert len(list(plan)) == expected * expected


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_counts_sweep_match_cover_and_fit(overlap):
    for n in range(16, 90, 7):
        for t in (16, 17, 31):
            if t > n:
                continue
            s = max(1, round(t * (1 - overlap)))
            pad = plan_tiles(n, n + 3, UTM_30M, None, TileSpec(size_px=t, overlap=overlap, edge="pad"), 16)
            drop = plan_tiles(n, n + 3, UTM_30M, None, TileSpec(size_px=t, overlap=overlap, edge="drop"), 16)
            assert pad.stride_x == s
            assert pad.n_cols == cover_count(n, t, s) and pad.n_rows == cover_count(n + 3, t, s)
            assert drop.n_cols == fit_count(n, t, s) and drop.n_rows == fit_count(n + 3, t, s)


def test_pad_and_shift_cover_every_pixel_drop_stays_inside():
    w, h, t = 70, 45, 16
    for edge in ("pad", "shift", "drop"):
        plan = plan_tiles(w, h, UTM_30M, None, TileSpec(size_px=t, edge=edge), 16)
        hits = np.zeros((h, w), int)
        for tile in plan:
            r0, c0 = max(tile.row_off, 0), max(tile.col_off, 0)
            hits[r0:tile.row_off + tile.height, c0:tile.col_off + tile.width] += 1
            if edge != "pad":
                assert 0 <= tile.col_off and tile.col_off + tile.width <= w
                assert 0 <= tile.row_off and tile.row_off + tile.height <= h
        if edge == "drop":
            assert hits[:32, :64].min() == 1 and hits[32:, :].sum() == 0 and hits[:, 64:].sum() == 0
        else:
            assert hits.min() >= 1


def test_shift_moves_last_tile_inside_full_size():
    plan = plan_tiles(100, 70, UTM_30M, None, TileSpec(size_px=30, edge="shift"), 16)
    assert (plan.n_rows, plan.n_cols) == (3, 4)
    assert [plan.tile(0, c).col_off for c in range(4)] == [0, 30, 60, 70]
    assert [plan.tile(r, 0).row_off for r in range(3)] == [0, 30, 40]
    for tile in plan:
        assert (tile.width, tile.height) == (30, 30)
    # with overlap: stride 15, starts 0..60 then the last is pulled back from 75 to 70
    plan = plan_tiles(100, 30, UTM_30M, None, TileSpec(size_px=30, overlap=0.5, edge="shift"), 16)
    assert [plan.tile(0, c).col_off for c in range(plan.n_cols)] == [0, 15, 30, 45, 60, 70]


def test_pad_tiles_hang_over_but_footprints_are_clipped():
    plan = plan_tiles(100, 70, UTM_30M, "EPSG:32633", TileSpec(size_px=32, edge="pad"), 16)
    assert (plan.n_rows, plan.n_cols) == (3, 4)
    last = plan.tile(2, 3)
    assert (last.col_off, last.row_off, last.width, last.height) == (96, 64, 32, 32)
    fp = plan.footprint(last)
    # cols 96..100, rows 64..70 -> x 502880..503000, y 3997900..3998080
    assert fp.equals(box(502880.0, 3997900.0, 503000.0, 3998080.0))
    assert fp.area == pytest.approx(4 * 6 * 900.0)
    union = unary_union([plan.footprint(t) for t in plan])
    assert union.equals(box(500000.0, 4000000.0 - 70 * 30, 500000.0 + 100 * 30, 4000000.0))


# ---- footprints -----------------------------------------------------------------------------------------------------
def test_north_up_utm_footprint_exact_corners():
    plan = plan_tiles(100, 70, UTM_30M, "EPSG:32633", TileSpec(size_px=32), 16)
    fp = plan.footprint(plan.tile(1, 2))
    # cols 64..96 -> x 501920..502880; rows 32..64 -> y 3999040..3998080
    expected = [(501920.0, 3999040.0), (502880.0, 3999040.0), (502880.0, 3998080.0), (501920.0, 3998080.0)]
    assert list(fp.exterior.coords)[:4] == expected
    assert fp.area == 32 * 32 * 900.0
    assert plan.crs == CRS.from_epsg(32633)


def test_rotated_transform_footprint():
    theta = math.radians(30)
    transform = Affine.translation(500000.0, 4000000.0) @ Affine.rotation(30) @ Affine.scale(10.0, -10.0)

    def to_map(c, r):  # scale (10, -10), rotate 30 deg anticlockwise, translate -- by hand
        x, y = 10.0 * c, -10.0 * r
        return (500000.0 + x * math.cos(theta) - y * math.sin(theta),
                4000000.0 + x * math.sin(theta) + y * math.cos(theta))

    plan = plan_tiles(64, 48, transform, "EPSG:32633", TileSpec(size_px=16), 16)
    for tile in (plan.tile(0, 0), plan.tile(1, 2), plan.tile(2, 3)):
        c0, r0, c1, r1 = tile.col_off, tile.row_off, tile.col_off + 16, tile.row_off + 16
        fp = plan.footprint(tile)
        got = list(fp.exterior.coords)[:4]
        want = [to_map(c0, r0), to_map(c1, r0), to_map(c1, r1), to_map(c0, r1)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert fp.area == pytest.approx(16 * 16 * 100.0, rel=1e-9)
        # a rotated tile is not its own bounding box
        assert box(*fp.bounds).area > fp.area * 1.3
    union = unary_union([plan.footprint(t) for t in plan])
    scene = Polygon([to_map(0, 0), to_map(64, 0), to_map(64, 48), to_map(0, 48)])
    assert union.symmetric_difference(scene).area < 1e-3
    assert union.area == pytest.approx(64 * 48 * 100.0, rel=1e-9)


@pytest.mark.parametrize("overlap,edge", [(0.0, "pad"), (0.5, "pad"), (0.0, "drop"), (0.25, "drop")])
def test_grid_transform_puts_grid_pixel_at_tile_origin(overlap, edge):
    plan = plan_tiles(100, 70, UTM_30M, "EPSG:32633", TileSpec(size_px=20, overlap=overlap, edge=edge), 16)
    g = plan.grid_transform
    stride = round(20 * (1 - overlap))
    assert (g.a, g.e, g.c, g.f) == (30.0 * stride, -30.0 * stride, 500000.0, 4000000.0)
    for tile in plan:
        x, y = g @ (tile.col, tile.row)
        assert (x, y) == (500000.0 + 30.0 * tile.col_off, 4000000.0 - 30.0 * tile.row_off)
        fx0, _, _, fy1 = plan.footprint(tile).bounds
        assert (x, y) == (fx0, fy1)


# ---- metres ---------------------------------------------------------------------------------------------------------
def test_metres_utm_30m_pixels():
    plan = plan_tiles(200, 100, UTM_30M, "EPSG:32633", TileSpec(size_m=240), 16)
    assert (plan.tile_width, plan.tile_height) == (8, 8)
    assert (plan.n_cols, plan.n_rows) == (25, 13)
    assert plan.footprint(plan.tile(0, 0)).equals(box(500000.0, 4000000.0 - 240, 500000.0 + 240, 4000000.0))


def test_metres_geographic_45_degrees():
    transform = Affine(0.0001, 0.0, 10.0, 0.0, -0.0001, 45.05)
    w = h = 1000  # centre at lon 10.05, lat 45.0
    geod = Geod(ellps="WGS84")
    gx = geod.inv(10.05, 45.0, 10.0501, 45.0)[2]
    gy = geod.inv(10.05, 45.0, 10.05, 44.9999)[2]
    px, py = pixel_size_m(transform, "EPSG:4326", w, h)
    assert px == pytest.approx(gx, rel=1e-7) and py == pytest.approx(gy, rel=1e-7)
    assert 7.8 < px < 7.95 and 11.1 < py < 11.15  # ~111.1 km/deg * cos(45) vs ~111.1 km/deg
    plan = plan_tiles(w, h, transform, "EPSG:4326", TileSpec(size_m=200), 16)
    assert (plan.tile_width, plan.tile_height) == (round(200 / gx), round(200 / gy)) == (25, 18)
    fp = plan.footprint(plan.tile(0, 0))
    np.testing.assert_allclose(fp.bounds, (10.0, 45.05 - 18 * 0.0001, 10.0 + 25 * 0.0001, 45.05), atol=1e-12)


def test_metres_without_crs_is_an_error_naming_the_scene():
    with pytest.raises(RasterInputError, match=r"plain\.tif.*no CRS"):
        plan_tiles(100, 100, Affine.identity(), None, TileSpec(size_m=100), 16, source="plain.tif")


def test_raster_smaller_than_one_tile():
    with pytest.raises(RasterInputError) as err:
        plan_tiles(20, 40, UTM_30M, "EPSG:32633", TileSpec(size_px=32), 16, source="small.tif")
    msg = str(err.value)
    assert "small.tif" in msg and "20x40" in msg and "32x32" in msg
    with pytest.raises(RasterInputError, match=r"small\.tif.*30x30 px.*960 m = 32x32 px"):
        plan_tiles(30, 30, UTM_30M, "EPSG:32633", TileSpec(size_m=960), 16, source="small.tif")
    for edge in ("pad", "shift", "drop"):  # one pixel short in one axis only
        with pytest.raises(RasterInputError):
            plan_tiles(32, 31, UTM_30M, None, TileSpec(size_px=32, edge=edge), 16)
    assert len(plan_tiles(32, 32, UTM_30M, None, TileSpec(size_px=32), 16)) == 1


def test_default_size_used_when_spec_is_empty():
    plan = plan_tiles(64, 64, UTM_30M, None, TileSpec(), 16)
    assert (plan.tile_width, plan.tile_height, len(plan)) == (16, 16, 16)


@pytest.mark.parametrize("kwargs,match", [
    (dict(size_px=16, size_m=100.0), "not both"),
    (dict(size_px=0), "1 pixel"),
    (dict(size_m=0.0), "> 0 m"),
    (dict(size_m=-5.0), "> 0 m"),
    (dict(size_m=float("nan")), "> 0 m"),
    (dict(size_m=float("inf")), "finite"),
    (dict(overlap=1.0), "overlap"),
    (dict(overlap=-0.1), "overlap"),
    (dict(overlap=float("nan")), "overlap"),
    (dict(edge="wrap"), "edge policy"),
])
def test_tilespec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TileSpec(**kwargs)
