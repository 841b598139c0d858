"""``segment``: dense map on the scene grid, Otsu threshold, split of touching objects, polygons, SAM refinement.

The tiny dense bundle (tests/utils/tiny_dense.py) scores each 8 px cell by its mean colour, so 'red' objects on a
green field have a known answer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.errors import BundleError, RasterInputError
from rsclip_geo.tasks.segment import otsu_threshold
from tests.utils.rasters import write_geotiff
from tests.utils.tiny_dense import build_tiny_dense_bundle

ORIGIN = (500000.0, 5000000.0)
SQUARE = (40, 80)  # rows/cols 40..80: a uniform red square
DISKS = ((180, 60), (180, 100))  # (row, col) centres of two touching red disks, brightest in the middle
RADIUS = 22


def _scene_pixels(size: int = 256) -> np.ndarray:
    img = np.zeros((3, size, size), np.uint8)
    img[1] = 120  # dark green field
    a, b = SQUARE
    img[:, a:b, a:b] = np.array([220, 30, 30], np.uint8)[:, None, None]
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in DISKS:
        d = np.hypot(yy - cy, xx - cx)
        inside = d < RADIUS
        f = np.clip(1 - d / RADIUS * 0.6, 0, 1)
        img[0][inside] = np.maximum(img[0][inside], (230 * f[inside]).astype(np.uint8))
        img[1][inside] = np.minimum(img[1][inside], (120 * (1 - f[inside])).astype(np.uint8))
    return img


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    return rsclip_geo.load_model(build_tiny_dense_bundle(tmp_path_factory.mktemp("tiny_dense")), device="cpu")


@pytest.fixture
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", _scene_pixels(), transform=Affine(1, 0, *ORIGIN[:1], 0, -1,
                                                                                    ORIGIN[1]))


def _xy(row: float, col: float) -> tuple[float, float]:
    return ORIGIN[0] + col, ORIGIN[1] - row


@pytest.mark.parametrize("overlap,staggered,windows", [(0.0, True, 16 + 9), (0.0, False, 16), (0.5, False, 49),
                                                       (0.5, True, 49 + 36)])
def test_cells_are_stitched_on_the_scene_grid(dense_model, scene, overlap, staggered, windows):
    """Every cell's score equals its own block's mean colour scored directly, whatever the window layout: windows
    overlap and are averaged, so any misplacement of a window (main or staggered grid) or cell would show."""
    seg = rsclip_geo.segment(scene, "red", model=dense_model, overlap=overlap, staggered=staggered, use_index=False)
    d = seg.dense  # (no cell cache: its float16 cells are tested below)
    assert d.stats["windows"] == windows and d.stats["staggered"] == staggered
    assert d.cells.shape == (32, 32) and np.isfinite(d.cells).all()
    x = _scene_pixels().astype(np.float64) / 255 * 2 - 1  # the bundle's mean/std 0.5
    blocks = x.reshape(3, 32, 8, 32, 8).mean(axis=(2, 4))
    expected = blocks[0] / np.linalg.norm(blocks, axis=0)
    np.testing.assert_allclose(d.cells, expected, atol=1e-5)
    # output grid = the scene's pixels, same CRS and transform
    assert d.array.shape == (256, 256) and d.crs == "EPSG:32633"
    assert d.transform.almost_equals(Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))


def test_scale_reads_the_scene_coarser_on_the_same_cells(dense_model, tmp_path):
    """A scene at twice the resolution read with scale=2 gives the native run's cells: each strip is resampled once
    and the windows are cut from it at whole cells, so an offset by a cell or a pixel would show at the edges."""
    img = _scene_pixels()
    fine = write_geotiff(tmp_path / "fine.tif", np.ascontiguousarray(img.repeat(2, axis=1).repeat(2, axis=2)),
                         transform=Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1]))
    native = write_geotiff(tmp_path / "native.tif", img, transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))
    a = rsclip_geo.segment(native, "red", model=dense_model).dense
    b = rsclip_geo.segment(fine, "red", model=dense_model, scale=2.0).dense
    assert b.cells.shape == a.cells.shape == (32, 32) and b.cell_px == 16
    assert b.cell_transform.almost_equals(a.cell_transform)
    np.testing.assert_allclose(b.cells, a.cells, atol=0.03)
    assert b.array.shape == (512, 512)


def test_staggered_windows_see_inner_cells_from_two_windows():
    from rsclip_geo.tasks.dense_map import plan_windows

    plan = plan_windows(26 * 8, 11 * 8, stride=8, scale=1.0, window=32, min_window=32, overlap=0.0)
    assert plan.grids == (((0, 4, 7), (0, 4, 8, 12, 16, 20, 22)),  # main grid, last window moved back
                          ((2, 6), (2, 6, 10, 14, 18, 22)))  # half a step after, wholly inside the scene
    assert len(plan) == 3 * 7 + 2 * 6
    cover = np.zeros((11, 26), int)
    for rows, cols in plan.grids:
        for r in rows:
            for c in cols:
                cover[r:r + 4, c:c + 4] += 1
    assert (cover >= 1).all() and (cover[2:10, 2:] >= 2).all()
    # a strip one window high is staggered along its length
    strip = plan_windows(26 * 8, 4 * 8, stride=8, scale=1.0, window=32, min_window=32, overlap=0.0)
    assert strip.grids == (((0,), (0, 4, 8, 12, 16, 20, 22)), ((0,), (2, 6, 10, 14, 18, 22)))
    # no second grid where it cannot fit or would coincide with the first
    assert len(plan_windows(40, 40, 8, 1.0, 64, 64).grids) == 1  # smaller than a window
    assert len(plan_windows(26 * 8, 88, 8, 1.0, 32, 32, overlap=0.75).grids) == 1  # step of one cell
    assert len(plan_windows(26 * 8, 88, 8, 1.0, 32, 32, staggered=False).grids) == 1
    # a tiny scale (model pixels far smaller than the scene's) is refused before any cell array exists
    with pytest.raises(rsclip_geo.OptionError, match="scale 1e-07 makes .* dense cells .*use a larger --scale"):
        plan_windows(96, 64, 8, 1e-7, 64, 64, where="s.tif")


def test_output_grid_is_bilinear_between_cell_centres():
    """The separable interpolation equals scipy's bilinear map_coordinates (edges clamped, NaN cells left out of
    the weights) for cell and output sizes that do not divide each other."""
    from types import SimpleNamespace

    from scipy.ndimage import map_coordinates

    from rsclip_geo.tasks.dense_map import INTERP_ROWS, to_output_grid

    rng = np.random.default_rng(0)
    for rows, cols, cell_px, out_px, shape in [(7, 9, 37.5, 1.0, (260, 330)), (1, 5, 32.0, 2.5, (11, 50)),
                                               (3, 2, 10.0, 0.7, (INTERP_ROWS + 29, 27))]:
        cells = rng.standard_normal((rows, cols)).astype(np.float32)
        cells[rng.random((rows, cols)) < 0.25] = np.nan
        cells[0, 0] = 1.0
        grid = SimpleNamespace(n_rows=shape[0], n_cols=shape[1], cell_x=out_px, cell_y=out_px)
        ok = np.isfinite(cells)
        yy, xx = np.meshgrid(((np.arange(shape[0]) + 0.5) * out_px) / cell_px - 0.5,
                             ((np.arange(shape[1]) + 0.5) * out_px) / cell_px - 0.5, indexing="ij")
        coords = np.stack([yy.ravel(), xx.ravel()])
        num = map_coordinates(np.where(ok, cells, 0.0), coords, order=1, mode="nearest")
        den = map_coordinates(ok.astype(float), coords, order=1, mode="nearest")
        want = np.where(den > 1e-6, num / np.maximum(den, 1e-12), np.nan).reshape(shape)
        got = to_output_grid(cells, cell_px, grid)
        assert got.shape == shape and (np.isnan(got) == np.isnan(want)).all()
        np.testing.assert_allclose(got[np.isfinite(got)], want[np.isfinite(want)], atol=1e-5)


def test_touching_objects_become_one_polygon_each(dense_model, scene):
    seg = rsclip_geo.segment(scene, "red", model=dense_model)
    gdf = seg.polygons
    assert len(gdf) == 3 and list(gdf["id"]) == [1, 2, 3]
    assert gdf["score"].is_monotonic_decreasing and (gdf["source"] == "dense").all()
    assert (gdf["score"] >= gdf["score_mean"]).all() and (gdf["score_mean"] > seg.threshold).all()
    centres = [_xy(SQUARE[0] + 20, SQUARE[0] + 20)] + [_xy(r, c) for r, c in DISKS]
    for cx, cy in centres:  # one polygon per object, near its centre
        dist = np.hypot(gdf.geometry.centroid.x - cx, gdf.geometry.centroid.y - cy)
        assert dist.min() < 4.0, (cx, cy, list(dist))
    square = gdf.iloc[int(np.argmin(np.hypot(gdf.geometry.centroid.x - centres[0][0],
                                             gdf.geometry.centroid.y - centres[0][1])))]
    assert 0.8 * 1600 < square["area_m2"] < 1.25 * 1600 and square["area_m2"] == pytest.approx(square.geometry.area)
    # the two disks do not overlap and share a boundary
    disks = gdf[gdf.index != square.name].geometry.tolist()
    assert disks[0].intersection(disks[1]).area < 1.0 and disks[0].distance(disks[1]) < 1.5

    whole = rsclip_geo.segment(scene, "red", model=dense_model, split=False)
    assert len(whole.polygons) == 2


def test_dense_raster_and_polygons_from_the_cli(dense_model, scene, tmp_path):
    out, ras = tmp_path / "objects.gpkg", tmp_path / "dense.tif"
    model_dir = dense_model.bundle.root
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(out), "--raster", str(ras),
                                  "--model", str(model_dir), "--min-area-m2", "500"])
    assert r.exit_code == 0, r.output
    assert "3 object(s) for 'red'" in r.output
    import geopandas as gpd

    gdf = gpd.read_file(out)
    assert len(gdf) == 3 and gdf.crs == "EPSG:32633" and (gdf["area_m2"] >= 500).all()
    with rasterio.open(ras) as ds, rasterio.open(scene) as sc:
        assert ds.crs == sc.crs and ds.transform == sc.transform and ds.shape == sc.shape
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.tags()["QUERY"] == "red" and float(ds.tags()["SCORE_MAX"]) > 0.4
        assert ds.tags()["WINDOWS"] == "25 (overlap 0.0, staggered)"
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(tmp_path / "grid.gpkg"), "--raster",
                                  str(tmp_path / "grid.tif"), "--model", str(model_dir), "--overlap", "0.5",
                                  "--no-stagger"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "grid.tif") as ds:
        assert ds.tags()["WINDOWS"] == "49 (overlap 0.5)"
    # an existing output is not overwritten without --overwrite
    before = out.read_bytes()
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(out), "--model", str(model_dir)])
    assert r.exit_code == 1 and "already exists" in r.output and out.read_bytes() == before
    r = CliRunner().invoke(main, ["segment", str(scene), " ", "-o", str(tmp_path / "x.gpkg"), "--model",
                                  str(model_dir)])
    assert r.exit_code == 2 and "empty query" in r.output and not (tmp_path / "x.gpkg").exists()


def test_nothing_found_is_an_empty_layer_and_a_message(dense_model, scene, tmp_path):
    out = tmp_path / "none.gpkg"
    r = CliRunner().invoke(main, ["segment", str(scene), "blue", "-o", str(out), "--threshold", "0.3",
                                  "--model", str(dense_model.bundle.root)])
    assert r.exit_code == 0, r.output
    assert "no object found for 'blue'" in r.output
    import geopandas as gpd

    gdf = gpd.read_file(out)
    assert len(gdf) == 0 and gdf.crs == "EPSG:32633" and {"score", "area_m2"} <= set(gdf.columns)


def test_invalid_pixels_are_nan_and_never_objects(dense_model, tmp_path):
    img = _scene_pixels()
    img[:, :, 200:] = 0  # a zero-filled strip (no nodata declared: zero-invalid auto)
    path = write_geotiff(tmp_path / "masked.tif", img, transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))
    seg = rsclip_geo.segment(path, "red", model=dense_model)
    assert np.isnan(seg.dense.array[:, 200:]).all() and np.isfinite(seg.dense.array[:, :200]).all()
    assert (seg.polygons.geometry.bounds["maxx"] <= ORIGIN[0] + 200).all()


def test_scene_smaller_than_a_window_gets_one_fitted_window(dense_model, tmp_path):
    small = _scene_pixels()[:, 20:60, 20:100]  # 40 x 80 px: less than the 64 px window in one axis
    path = write_geotiff(tmp_path / "small.tif", np.ascontiguousarray(small),
                         transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))
    seg = rsclip_geo.segment(path, "red", model=dense_model)
    assert seg.dense.stats["windows"] == 2 and seg.dense.array.shape == (40, 80)
    assert len(seg.polygons) == 1
    tiny = write_geotiff(tmp_path / "tiny.tif", np.ascontiguousarray(small[:, :5, :5]))
    with pytest.raises(RasterInputError, match="smaller than one dense cell"):
        rsclip_geo.segment(tiny, "red", model=dense_model)


def test_bad_input_is_named(dense_model, tiny_model, scene, tmp_path):
    with pytest.raises(BundleError, match="no dense head"):
        rsclip_geo.segment(scene, "red", model=tiny_model)
    with pytest.raises(rsclip_geo.LabelError, match="empty query"):
        rsclip_geo.segment(scene, "  ", model=dense_model)
    for threshold in ("high", math.nan, "-inf", True):  # refused before any window is encoded or cached
        with pytest.raises(rsclip_geo.OptionError, match="threshold must be"):
            rsclip_geo.segment(scene, "red", model=dense_model, threshold=threshold)
    assert not list(Path(scene).parent.glob("*rsclip-dense*"))
    with pytest.raises(ValueError, match="multiple of the dense stride"):
        rsclip_geo.segment(scene, "red", model=dense_model, window=60)
    with pytest.raises(BundleError, match="'decoder'"):
        empty = tmp_path / "sam"
        empty.mkdir()
        (empty / "x_encoder.onnx").write_bytes(b"")
        rsclip_geo.segment(scene, "red", model=dense_model, refine=empty)


def test_negative_prompts_lower_the_scores(dense_model, scene):
    plain = rsclip_geo.segment(scene, "red", model=dense_model, use_index=False)
    steered = rsclip_geo.segment(scene, "red", model=dense_model, negative=["green"], negative_weight=1.0,
                                 use_index=False)
    x = _scene_pixels().astype(np.float64) / 255 * 2 - 1
    blocks = x.reshape(3, 32, 8, 32, 8).mean(axis=(2, 4))
    green = blocks[1] / np.linalg.norm(blocks, axis=0)  # each cell's similarity to 'green'
    np.testing.assert_allclose(steered.dense.cells, plain.dense.cells - green, atol=1e-5)


def _sidecars(scene):
    return scene.with_name(scene.name + ".rsclip-dense.npy"), scene.with_name(scene.name + ".rsclip-dense.json")


def _counting_encoder(model):
    calls = []
    original = model.encode_dense

    def encode_dense(batch):
        calls.append(len(batch))
        return original(batch)

    model.encode_dense = encode_dense
    return calls, lambda: setattr(model, "encode_dense", original)


def test_next_query_reuses_the_scenes_dense_cells(dense_model, scene):
    """The query-free cell embeddings are saved beside the scene; the next query reads them instead of running the
    encoder, and gives the map it would have given from scratch (up to the float16 storage)."""
    npy, meta = _sidecars(scene)
    calls, restore = _counting_encoder(dense_model)
    try:
        first = rsclip_geo.segment(scene, "red", model=dense_model)
        assert first.stats["cells_from"] == "saved" and sum(calls) == 25 and npy.is_file() and meta.is_file()
        umask = os.umask(0)
        os.umask(umask)
        assert npy.stat().st_mode & 0o777 == meta.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others
        stored = np.load(npy)
        assert stored.shape == (25, 8, 8) and stored.dtype.names == ("embedding", "valid")
        assert np.allclose(np.linalg.norm(stored["embedding"].astype(np.float32), axis=-1), 1, atol=2e-3)
        calls.clear()
        again = rsclip_geo.segment(scene, "red", model=dense_model)
        other = rsclip_geo.segment(scene, "green", model=dense_model)
        assert again.stats["cells_from"] == other.stats["cells_from"] == "reused" and not calls
    finally:
        restore()
    np.testing.assert_array_equal(again.dense.array, first.dense.array)  # the same map on every run
    fresh = rsclip_geo.segment(scene, "green", model=dense_model, use_index=False)
    assert fresh.stats["cells_from"] == "encoded"
    np.testing.assert_allclose(other.dense.cells, fresh.dense.cells, atol=2e-3)
    assert abs(other.dense.cells - fresh.dense.cells).max() > 0  # (really read back, not recomputed)


def test_stale_or_damaged_dense_cells_are_rebuilt(dense_model, scene):
    npy, meta = _sidecars(scene)
    assert rsclip_geo.segment(scene, "red", model=dense_model).stats["cells_from"] == "saved"
    # another window layout: rebuilt (and replaces the cells: one cache per scene)
    assert rsclip_geo.segment(scene, "red", model=dense_model, overlap=0.5).stats["cells_from"] == "saved"
    assert np.load(npy).shape == (49 + 36, 8, 8)
    assert rsclip_geo.segment(scene, "red", model=dense_model, overlap=0.5).stats["cells_from"] == "reused"
    # other scene options, then a scene rewritten in place
    assert rsclip_geo.segment(scene, "red", model=dense_model, overlap=0.5,
                              bands=[2, 1, 3]).stats["cells_from"] == "saved"
    img = _scene_pixels()
    img[:, :32, :32] = 255
    write_geotiff(scene, img, transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))
    res = rsclip_geo.segment(scene, "red", model=dense_model, overlap=0.5, bands=[2, 1, 3])
    assert res.stats["cells_from"] == "saved"
    # damaged or crafted files are never read: each is rebuilt
    rec = np.load(npy)
    for damage in ("truncate", "swap", "json", "header", "huge json"):
        if damage == "truncate":
            npy.write_bytes(npy.read_bytes()[:-100])
        elif damage == "swap":  # a well-formed .npy of the right shape, but not the one the JSON describes
            forged = rec.copy()
            forged["embedding"] = -forged["embedding"]
            np.save(npy, forged)
        elif damage == "json":
            meta.write_text("{not json")
        elif damage == "huge json":
            meta.write_text(meta.read_text()[:-1] + ', "pad": "' + "x" * (2 << 20) + '"}')
        else:  # a header claiming another shape, the JSON updated to match the file
            np.save(npy, rec[:3])
            import hashlib
            import json

            m = json.loads(meta.read_text())
            m["npy"] = {"size": npy.stat().st_size, "sha1_head_tail": hashlib.sha1(npy.read_bytes()).hexdigest()}
            meta.write_text(json.dumps(m))
        again = rsclip_geo.segment(scene, "red", model=dense_model, overlap=0.5, bands=[2, 1, 3])
        assert again.stats["cells_from"] == "saved", damage
        np.testing.assert_array_equal(again.dense.array, res.dense.array)
        rec = np.load(npy)


def test_dense_cells_that_cannot_be_saved_cost_a_warning_not_the_run(dense_model, scene, tmp_path):
    from rsclip_geo.embeddings.dense_cells import DenseCellCache
    from rsclip_geo.embeddings.index import IndexNotSavedWarning
    from rsclip_geo.raster.scene import Scene
    from rsclip_geo.tasks.dense_map import dense_map

    cache = DenseCellCache(scene, dense_model.bundle.name, dense_model.fingerprint, {})
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    cache.npy, cache.meta = blocker / "x.npy", blocker / "x.json"
    with Scene(scene) as sc, pytest.warns(IndexNotSavedWarning, match="could not be saved"):
        d = dense_map(sc, dense_model, "red", cache=cache)
    assert d.stats["cells_from"] == "not saved" and np.isfinite(d.cells).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_folder", "scene.tif"]


def test_no_index_leaves_nothing_beside_the_scene(dense_model, scene, tmp_path):
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(tmp_path / "o.gpkg"), "--no-index",
                                  "--model", str(dense_model.bundle.root)])
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in _sidecars(scene)) and "cells saved" not in r.output
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(tmp_path / "p.gpkg"),
                                  "--model", str(dense_model.bundle.root)])
    assert r.exit_code == 0 and "cells saved for reuse" in r.output and all(p.exists() for p in _sidecars(scene))
    r = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(tmp_path / "q.gpkg"),
                                  "--model", str(dense_model.bundle.root)])
    assert r.exit_code == 0 and "cells reused from the scene's dense cache" in r.output


def test_sampled_flood_splits_as_well_as_the_full_flood():
    """On maps bilinear between cell centres (what dense_map makes), flooding every step-th pixel (4 samples per
    cell) labels every pixel, keeps each peak in its own part, and agrees with a fine watershed (128 levels, every
    pixel) at least as well as flooding every pixel at the default 32 levels does."""
    from scipy import ndimage

    from rsclip_geo.tasks.segment import flood_from_markers, split_regions

    def owners(labels, markers):  # pixel -> index of the marker its part holds (-1: none), to compare partitions
        out = np.full(labels.shape, -1)
        for i, (r, c) in enumerate(markers):
            if labels[r, c]:
                out[labels == labels[r, c]] = i
        return out

    def fine_watershed(score, mask, markers):
        out = np.zeros(mask.shape, np.int32)
        regions, _ = ndimage.label(mask)
        for k, sl in enumerate(ndimage.find_objects(regions), start=1):
            region = regions[sl] == k
            seeds = np.zeros(region.shape, np.int32)
            for i, (r, c) in enumerate(markers, start=1):
                if sl[0].start <= r < sl[0].stop and sl[1].start <= c < sl[1].stop and region[r - sl[0].start,
                                                                                              c - sl[1].start]:
                    seeds[r - sl[0].start, c - sl[1].start] = i
            flooded = flood_from_markers(np.where(region, score[sl], -np.inf), region, seeds, levels=128)
            out[sl][region] = np.where(flooded[region] > 0, flooded[region], 0)
        return out

    rng = np.random.default_rng(1)
    cell = 16
    agree_sampled, agree_full = [], []
    for _ in range(4):
        cells = ndimage.gaussian_filter(rng.standard_normal((14, 18)), 1.0)
        score = ndimage.zoom(cells, cell, order=1, mode="nearest")
        cut = np.quantile(score, 0.45)
        mask = score > cut
        peaks = np.argwhere((ndimage.maximum_filter(cells, size=3) == cells) & (cells > cut))
        markers = [(int(r), int(c)) for r, c in peaks * cell + cell // 2]
        full = split_regions(score, mask, np.array(markers), step=1)
        sampled = split_regions(score, mask, np.array(markers), step=cell // 4)
        assert ((sampled > 0) == mask).all() and sampled.max() == full.max() >= 3
        ref = owners(fine_watershed(score, mask, markers), markers)
        got_s, got_f = owners(sampled, markers), owners(full, markers)
        inside = [i for i, (r, c) in enumerate(markers) if mask[r, c]]
        assert all(got_s[markers[i]] == i for i in inside)  # each peak in its own part
        split_pixels = mask & (ref >= 0)
        agree_sampled.append((got_s[split_pixels] == ref[split_pixels]).mean())
        agree_full.append((got_f[split_pixels] == ref[split_pixels]).mean())
    assert min(agree_sampled) >= 0.9 and np.mean(agree_sampled) >= np.mean(agree_full) - 0.01, (agree_sampled,
                                                                                               agree_full)


def test_otsu_threshold_separates_two_modes():
    rng = np.random.default_rng(0)
    low, high = rng.normal(-0.5, 0.05, 5000), rng.normal(0.4, 0.05, 500)
    t = otsu_threshold(np.concatenate([low, high, [np.nan, np.inf]]))
    assert (high > t).all() and (low < t).mean() > 0.999
    assert np.isnan(otsu_threshold(np.array([np.nan])))


def test_sam_masks_replace_the_blobs(dense_model, scene, tmp_path):
    pytest.importorskip("torch")
    from tests.utils.tiny_sam import build_tiny_sam

    sam = build_tiny_sam(tmp_path / "sam")
    seg = rsclip_geo.segment(scene, "red", model=dense_model, refine=sam)
    gdf = seg.polygons
    assert len(gdf) == 3 and (gdf["source"] == "sam").all() and np.allclose(gdf["sam_iou"], 0.9)
    for _, row in gdf.iterrows():
        g = row.geometry
        # the tiny decoder answers with the disk inscribed in the box prompt, centred on the peak point
        assert g.area / g.envelope.area == pytest.approx(np.pi / 4, abs=0.06)
        assert np.hypot(g.centroid.x - row["peak_x"], g.centroid.y - row["peak_y"]) < 2.0
        r = 0.5 * min(g.bounds[2] - g.bounds[0], g.bounds[3] - g.bounds[1])
        assert 15 < r < 26 and row["area_m2"] == pytest.approx(g.area)


def test_auto_uses_the_bundles_calibrated_threshold(dense_model, scene, tmp_path):
    import json
    import shutil

    folder = tmp_path / "calibrated"
    shutil.copytree(dense_model.bundle.root, folder)
    doc = json.loads((folder / "model.json").read_text())
    otsu = rsclip_geo.segment(scene, "red", model=dense_model)
    assert otsu.threshold_rule.startswith("auto: Otsu")
    doc["dense"]["threshold"] = 0.99  # above every score of the tiny model: nothing is found
    (folder / "model.json").write_text(json.dumps(doc))
    calibrated = rsclip_geo.load_model(folder, device="cpu")
    assert calibrated.bundle.dense.threshold == 0.99
    r = rsclip_geo.segment(scene, "red", model=calibrated)
    assert r.threshold == 0.99 and "calibrated" in r.threshold_rule and len(r.polygons) == 0
    # 'otsu' asks for Otsu explicitly; negatives or a raw query shift the scores, so auto falls back to Otsu
    assert rsclip_geo.segment(scene, "red", model=calibrated, threshold="otsu").threshold == otsu.threshold
    neg = rsclip_geo.segment(scene, "red", model=calibrated, negative="blue")
    assert neg.threshold_rule.startswith("auto: Otsu") and neg.threshold != 0.99
    out = tmp_path / "otsu.gpkg"
    res = CliRunner().invoke(main, ["segment", str(scene), "red", "-o", str(out), "--threshold", "otsu",
                                    "--model", str(folder)])
    assert res.exit_code == 0 and "otsu: Otsu" in res.output, res.output
    for bad in (2.0, "0.5", True):
        (folder / "model.json").write_text(json.dumps({**doc, "dense": {**doc["dense"], "threshold": bad}}))
        with pytest.raises(rsclip_geo.BundleError, match="dense.threshold"):
            rsclip_geo.read_bundle(folder)


@pytest.mark.parametrize("n", [2, 4])
def test_rotation_ensemble_turns_each_windows_cells_back_onto_its_grid(tmp_path, n):
    """The tiny dense head is exactly rotation-equivariant (each cell is its block's mean colour), so the mean of the
    turns, each turned back, is the plain cell normalised: any misplaced turn would mix other cells in."""
    bundle = build_tiny_dense_bundle(tmp_path / "dense")
    plain = rsclip_geo.load_model(bundle, device="cpu")
    turned = rsclip_geo.load_model(bundle, device="cpu", rotations=n)
    batch = np.random.default_rng(0).standard_normal((2, 3, 16, 40)).astype(np.float32)  # 2 x 5 cells, not square
    cells = plain.encode_dense(batch)
    got = turned.encode_dense(batch)
    assert got.shape == cells.shape == (2, 2, 5, 3)
    np.testing.assert_allclose(got, cells / np.linalg.norm(cells, axis=-1, keepdims=True), atol=1e-6)


def test_cells_saved_without_rotations_are_not_reused_with_them(tmp_path):
    bundle = build_tiny_dense_bundle(tmp_path / "dense")
    scene = write_geotiff(tmp_path / "scene.tif", _scene_pixels(), transform=Affine(1, 0, ORIGIN[0], 0, -1, ORIGIN[1]))
    plain = rsclip_geo.segment(scene, "red", model=rsclip_geo.load_model(bundle, device="cpu"))
    turned_model = rsclip_geo.load_model(bundle, device="cpu", rotations=4)
    turned = rsclip_geo.segment(scene, "red", model=turned_model)
    assert plain.stats["cells_from"] == turned.stats["cells_from"] == "saved"  # re-encoded, not 'reused'
    assert rsclip_geo.segment(scene, "red", model=turned_model).stats["cells_from"] == "reused"
    # the tiny head is rotation-equivariant: the same objects either way
    assert len(plain.polygons) == len(turned.polygons) > 0
    said = {}
    for rotations in ("4", "1"):  # the scene's cache holds the 4-rotation cells now
        result = CliRunner().invoke(main, ["segment", str(scene), "red", "--model", str(bundle), "--device", "cpu",
                                           "--rotations", rotations, "-o", str(tmp_path / f"objects{rotations}.gpkg")])
        assert result.exit_code == 0, result.output
        said[rotations] = result.output
    assert "cells reused" in said["4"] and "cells saved" in said["1"]
