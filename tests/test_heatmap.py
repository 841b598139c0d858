"""SeLo heatmaps: localisation quality (colour mosaics with the tiny model, real AID mosaics with the default model),
output geometry on the scene grid, NaN over nodata, resolution options, index reuse, numerics, errors, CLI."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.errors import LabelError, OutputError, RasterInputError
from rsclip_geo.tasks.heatmap import (DIRECT_TAPS, OutputGrid, _blur_axis, _fft_size, accumulate, default_scales,
                                gaussian_kernel, output_grid, selo_specs, smooth)
from rsclip_geo.embeddings.index import sidecar_path
from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR
from rsclip_geo.raster.scene import Scene
from tests.utils.mosaic import build_mosaic, class_query, roc_auc, truth_on_grid
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

COLOURS = {"red": RED, "green": GREEN, "blue": BLUE}
NAMES = ("red", "green", "blue")
# 3:1 scene (192 x 64 px of 32 px blocks, 10 m pixels): the SeLo research code slices rows by the width and
# only works for square images.
LAYOUT = [["red", "green", "blue", "red", "green", "blue"], ["blue", "red", "green", "green", "blue", "red"]]
BLOCK = 32
TRANSFORM = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)


def write_layout(path, layout, nodata=None):
    data = colour_blocks([[COLOURS[c] for c in row] for row in layout], BLOCK)
    return write_geotiff(path, data, transform=TRANSFORM, nodata=nodata)


def truth(layout, name):
    return np.kron(np.array([[c == name for c in row] for row in layout]), np.ones((BLOCK, BLOCK), bool))


@pytest.fixture()
def wide(tmp_path):
    return write_layout(tmp_path / "wide.tif", LAYOUT)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# ---- localisation with the tiny colour model -------------------------------------------------------------------
@pytest.mark.parametrize("orientation", ["wide", "tall"])
def test_colour_queries_localise_on_non_square_scene(tmp_path, tiny_model, orientation):
    layout = LAYOUT if orientation == "wide" else [list(col) for col in zip(*LAYOUT)]
    path = write_layout(tmp_path / f"{orientation}.tif", layout)
    aucs = {}
    for name in NAMES:
        heat = rsclip_geo.heatmap(path, name, scales=[16, 32], model=tiny_model)
        assert heat.shape == (len(layout) * BLOCK, len(layout[0]) * BLOCK)
        assert heat.transform == TRANSFORM and heat.crs.to_epsg() == 32633
        assert np.isfinite(heat.array).all() and heat.array.min() >= 0 and heat.array.max() <= 1
        aucs[name] = roc_auc(heat.array, truth(layout, name))
    assert min(aucs.values()) >= 0.99, aucs
    # windows: 16 px at stride 8 and 32 px at stride 16, edge 'shift' -> exact counts
    w, h = len(layout[0]) * BLOCK, len(layout) * BLOCK
    expected = sum(((w - s) // (s // 2) + 1) * ((h - s) // (s // 2) + 1) for s in (16, 32))
    assert heat.stats["windows_used"] == expected


def test_output_is_min_max_normalised_then_smoothed(wide, tiny_model):
    kw = dict(scales=[16, 32], model=tiny_model, use_index=False)  # same (float32) embeddings in every call
    raw = rsclip_geo.heatmap(wide, "red", sigma=0, **kw)
    assert raw.sigma == 0 and np.nanmin(raw.array) == 0.0 and np.nanmax(raw.array) == pytest.approx(1.0)
    sim = raw.similarity
    expect = (sim - sim.min()) / (sim.max() - sim.min())
    np.testing.assert_allclose(raw.array, expect, atol=1e-6)
    assert raw.stats["similarity_min"] == pytest.approx(float(sim.min()), abs=1e-6)
    smoothed = rsclip_geo.heatmap(wide, "red", sigma=3, **kw)
    np.testing.assert_allclose(smoothed.array, smooth(raw.array.astype(np.float64), np.isfinite(raw.array), 3),
                               atol=1e-5)
    auto = rsclip_geo.heatmap(wide, "red", **kw)
    assert auto.sigma == pytest.approx(2.0)  # a quarter of the smallest stride (8 px) in 1 px cells


# ---- geometry of the output ------------------------------------------------------------------------------------
def test_written_cog_keeps_the_scene_grid(wide, tiny_model, tmp_path):
    heat = rsclip_geo.heatmap(wide, "green", scales=[16, 32], model=tiny_model, cell=4)
    out = heat.write(tmp_path / "heat.tif")
    with rasterio.open(out) as ds, rasterio.open(wide) as scene:
        assert ds.crs == scene.crs and ds.bounds == scene.bounds
        assert ds.transform == TRANSFORM @ Affine.scale(4)
        assert (ds.height, ds.width) == (16, 48) and ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        assert ds.tags()["QUERY"] == "green" and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        np.testing.assert_array_equal(ds.read(1), heat.array)
    with pytest.raises(rsclip_geo.OutputError, match="already exists"):
        heat.write(out)


def test_output_resolution_options(wide):
    with Scene(wide) as sc:
        assert (output_grid(sc).n_rows, output_grid(sc).n_cols) == (64, 192)  # small scene: scene resolution
        g = output_grid(sc, resolution_m=25)  # 1920 x 640 m -> ceil(76.8) x ceil(25.6) cells
        assert (g.n_rows, g.n_cols) == (26, 77)
        assert g.transform @ (g.n_cols, g.n_rows) == pytest.approx(TRANSFORM @ (192, 64))  # exact bounds kept
        assert g.cell_x * 10 <= 25 and g.cell_y * 10 <= 25
        g = output_grid(sc, cell=5)
        assert (g.n_rows, g.n_cols) == (13, 39)
        g = output_grid(sc, max_cells=1000)  # large-scene rule: about max_cells cells, never full resolution
        assert g.n_rows * g.n_cols <= 1100 and g.cell_x > 1
        assert g.transform @ (g.n_cols, g.n_rows) == pytest.approx(TRANSFORM @ (192, 64))
        with pytest.raises(ValueError, match="not both"):
            output_grid(sc, resolution_m=20, cell=2)
        with pytest.raises(ValueError, match="finer than the scene"):
            output_grid(sc, resolution_m=5)
        with pytest.raises(ValueError, match=">= 1 scene pixel"):
            output_grid(sc, cell=0.5)


def test_nan_exactly_over_nodata(tmp_path, tiny_model):
    data = colour_blocks([[COLOURS[c] for c in row] for row in LAYOUT], BLOCK)
    data[:, :, 128:] = 0  # right third is nodata
    path = write_geotiff(tmp_path / "nodata.tif", data, transform=TRANSFORM, nodata=0)
    heat = rsclip_geo.heatmap(path, "blue", scales=[16, 32], model=tiny_model)
    assert np.isnan(heat.array[:, 128:]).all() and np.isfinite(heat.array[:, :128]).all()
    assert roc_auc(heat.array, truth(LAYOUT, "blue")) >= 0.99
    coarse = rsclip_geo.heatmap(path, "blue", scales=[16, 32], model=tiny_model, cell=8)
    assert np.isnan(coarse.array[:, 16:]).all() and np.isfinite(coarse.array[:, :16]).all()


# ---- index reuse -----------------------------------------------------------------------------------------------
def test_second_call_reuses_the_index(wide, tiny_model):
    first = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model)
    index = sidecar_path(wide)
    assert index.exists() and first.stats["windows_encoded"] == first.stats["windows_used"] > 0
    mtime = index.stat().st_mtime_ns
    second = rsclip_geo.heatmap(wide, "blue", scales=[16, 32], model=tiny_model, cell=2)
    assert second.stats["windows_encoded"] == 0 and second.stats["windows_reused"] == first.stats["windows_used"]
    assert index.stat().st_mtime_ns == mtime
    again = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model)
    np.testing.assert_allclose(again.array, first.array, atol=2e-2)  # float16 embeddings in the file
    # one scale matches, the other is encoded; the index (right scene + model, other tiling) is left alone
    partial = rsclip_geo.heatmap(wide, "red", scales=[32, 64], model=tiny_model)
    assert 0 < partial.stats["windows_reused"] < partial.stats["windows_used"]
    assert partial.stats["windows_encoded"] == 5  # 64 px windows at stride 32: (192 - 64) / 32 + 1 = 5 by 1
    assert index.stat().st_mtime_ns == mtime
    nothing = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model, use_index=False)
    assert nothing.stats["windows_reused"] == 0


def test_index_built_by_the_cli_is_reused(wide, tiny_bundle, tiny_model):
    r = run("index", wide, "--model", tiny_bundle, "--scales", "16,32", "--overlap", 0.5, "--edge", "shift", "-q")
    assert r.exit_code == 0, r.output
    heat = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model)
    assert heat.stats["windows_encoded"] == 0 and heat.stats["windows_reused"] > 0
    # a differently tiled search index is not overwritten by a heatmap
    other = run("index", wide, "--model", tiny_bundle, "--tile-size", 32, "--overwrite", "-q")
    assert other.exit_code == 0, other.output
    mtime = sidecar_path(wide).stat().st_mtime_ns
    heat = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model)
    assert heat.stats["windows_reused"] == 0 and sidecar_path(wide).stat().st_mtime_ns == mtime



def test_explicit_index_file_that_is_not_ours_is_never_replaced(wide, tmp_path, tiny_bundle, tiny_model):
    """Like search: --index FILE that cannot be reused (another scene's index, or not an index) is refused unless
    --overwrite; the sidecar stays a freely replaced cache."""
    other_scene = write_layout(tmp_path / "other.tif", [list(reversed(row)) for row in LAYOUT])
    theirs = tmp_path / "theirs.parquet"
    r = run("index", other_scene, "--model", tiny_bundle, "--tile-size", 32, "-o", theirs, "-q")
    assert r.exit_code == 0, r.output
    notes = tmp_path / "notes.parquet"
    notes.write_bytes(b"my own notes, not an index")
    for target in (theirs, notes):
        before = target.read_bytes()
        out = tmp_path / f"heat_{target.stem}.tif"
        r = run("heatmap", wide, "red", "--model", tiny_bundle, "--scales", "16,32", "--index", target, "-o", out,
                "-q")
        assert r.exit_code != 0 and "cannot be reused" in r.output and "--overwrite" in r.output, r.output
        assert target.read_bytes() == before and not out.exists()
        with pytest.raises(OutputError, match="not replaced"):
            rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model, index_path=target)
        assert target.read_bytes() == before
    r = run("heatmap", wide, "red", "--model", tiny_bundle, "--scales", "16,32", "--index", theirs, "-o",
            tmp_path / "heat.tif", "--overwrite", "-q")
    assert r.exit_code == 0, r.output
    heat = rsclip_geo.heatmap(wide, "red", scales=[16, 32], model=tiny_model, index_path=theirs)
    assert heat.stats["windows_encoded"] == 0  # replaced by this scene's index, now reused

# ---- numerics --------------------------------------------------------------------------------------------------
def test_accumulate_matches_brute_force():
    rng = np.random.default_rng(1)
    w, h = 97, 61
    cols, rows = rng.integers(0, w - 20, 40), rng.integers(0, h - 12, 40)
    values = rng.random(40)
    for n_cols, n_rows in ((w, h), (23, 17)):
        cx, cy = w / n_cols, h / n_rows
        grid = OutputGrid(n_rows, n_cols, cx, cy, Affine.scale(cx, cy), None)
        total, count = accumulate(grid, [(cols[:25], rows[:25], 20, 12, values[:25]),
                                         (cols[25:], rows[25:], 9, 5, values[25:])])
        ref_t, ref_n = np.zeros((n_rows, n_cols)), np.zeros((n_rows, n_cols))
        centres_x, centres_y = (np.arange(n_cols) + 0.5) * cx, (np.arange(n_rows) + 0.5) * cy
        for k, (c0, r0, v) in enumerate(zip(cols, rows, values)):
            ww, hh = (20, 12) if k < 25 else (9, 5)
            inside = ((centres_y >= r0) & (centres_y < r0 + hh))[:, None] & \
                     ((centres_x >= c0) & (centres_x < c0 + ww))[None, :]
            ref_t += inside * v
            ref_n += inside
        np.testing.assert_allclose(total, ref_t, atol=1e-9)
        np.testing.assert_array_equal(count, ref_n)


def test_separable_gaussian_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (train extra) is the reference, not a runtime dep")
    rng = np.random.default_rng(2)
    a = rng.random((40, 70))
    valid = np.ones_like(a, bool)
    for sigma in (0.7, 2.5, 20.0):  # 0.7 -> 7 taps: direct; 2.5 -> 21, 20 -> 161 taps: FFT
        ref = ndimage.gaussian_filter(a, sigma, mode="constant", truncate=4.0) / \
            ndimage.gaussian_filter(np.ones_like(a), sigma, mode="constant", truncate=4.0)
        np.testing.assert_allclose(smooth(a, valid, sigma), np.clip(ref, a.min(), a.max()), atol=1e-9)
    k = gaussian_kernel(12.0)
    assert len(k) > DIRECT_TAPS and abs(k.sum() - 1) < 1e-12
    direct = sum(kv * np.pad(a, ((0, 0), (48, 48)))[:, t:t + 70] for t, kv in enumerate(k))
    np.testing.assert_allclose(_blur_axis(a, k, 1), direct, atol=1e-10)
    assert [_fft_size(n) for n in (1, 7, 1000, 2126, 2254)] == [1, 8, 1000, 2160, 2304]
    holes = valid.copy()
    holes[10:20, 30:50] = False
    out = smooth(a, holes, 2.0)
    assert np.isnan(out[~holes]).all() and np.isfinite(out[holes]).all()
    # a sigma far beyond the grid: the kernel stops at the grid's size (the same answer: sigma 20 above already
    # stops at 69 of its 80 taps, and matches scipy; no 58 TiB of taps for 1e12), and a flat-enough Gaussian is
    # the mean of the valid cells everywhere
    assert len(gaussian_kernel(1e12, 69)) == 139 and len(gaussian_kernel(20.0)) == 161
    flat = smooth(a, holes, 1e12)
    assert np.isnan(flat[~holes]).all()
    np.testing.assert_allclose(flat[holes], a[holes].mean(), atol=1e-9)


# ---- scales and errors -----------------------------------------------------------------------------------------
def test_scales_and_clear_errors(wide, tiny_model, caplog):
    specs = selo_specs([16, 32])
    assert all(s.overlap == 0.5 and s.edge == "shift" for s in specs)
    assert [s.size_m for s in selo_specs(scales_m=[100, 200])] == [100, 200]
    assert [s.size_px for s in default_scales(2000, 700, 224)] == [224]  # 448 > 700 / 2
    assert [s.size_px for s in default_scales(192, 64, 224)] == [16, 32]  # small scene: 1/4 and 1/2 of 64
    with pytest.raises(ValueError, match="not both"):
        selo_specs([16], [100])
    with pytest.raises(LabelError, match="empty heatmap query"):
        rsclip_geo.heatmap(wide, "  ", model=tiny_model)
    with pytest.raises(RasterInputError, match="wide.tif.*smaller than one tile"):
        rsclip_geo.heatmap(wide, "red", scales=[100], model=tiny_model)
    heat = rsclip_geo.heatmap(wide, "red", scales=[16, 100], model=tiny_model)  # 100 px > 64 px high: left out
    assert heat.window_px == [(16, 16)] and "left out" in caplog.text
    with pytest.raises(ValueError, match="sigma"):
        rsclip_geo.heatmap(wide, "red", scales=[16], model=tiny_model, sigma=-1)


def test_cli_heatmap_and_its_errors(wide, tiny_bundle, tmp_path):
    out = tmp_path / "heat.tif"
    base = ("heatmap", wide, "red", "--model", tiny_bundle, "--device", "cpu")
    r = run(*base, "-o", out, "--scales", "16,32", "--cell", 2, "--smooth", 1)
    assert r.exit_code == 0, r.output
    assert "96x32 cells" in r.output and "wrote" in r.output
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (96, 32) and ds.bounds == rasterio.open(wide).bounds
    for extra, message in ((("--scales", "16", "--scales-m", "200"), "not both"),
                           (("--cell", 2, "--resolution-m", 20), "not both"),
                           (("--scales", "0"), "positive")):
        r = run(*base, "-o", tmp_path / "x.tif", *extra)
        assert r.exit_code == 2 and message in r.output, r.output
    r = run("heatmap", wide, " ", "-o", tmp_path / "x.tif", "--model", tiny_bundle)
    assert r.exit_code == 2 and "empty query" in r.output
    r = run(*base, "-o", out, "--scales", "16")
    assert r.exit_code == 1 and "already exists" in r.output
    r = run(*base, "-o", tmp_path / "x.tif", "--scales", "500")
    assert r.exit_code == 1 and "smaller than one tile" in r.output
    r = run(*base, "-o", tmp_path / "x.tif", "--scales", "16", "--resolution-m", "0.5")  # the scene has 10 m pixels
    assert r.exit_code == 1 and "finer than the scene's pixels" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.tif").exists()


# ---- a real scene ----------------------------------------------------------------------------------------------
def test_real_scene_geometry(shared_data, tiny_bundle, tmp_path):
    scene = Path(shutil.copy(shared_data / "scenes" / "rgbn_5m.tif", tmp_path / "rgbn_5m.tif"))  # its index too
    out = tmp_path / "heat10.tif"
    r = run("heatmap", scene, "red", "-o", out, "--model", tiny_bundle, "--scales-m", "160,320",
            "--resolution-m", 10, "-q")
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as ds, rasterio.open(scene) as sc:
        assert ds.crs.to_epsg() == 32618 and sc.crs.to_epsg() == 32618
        assert ds.bounds == pytest.approx(sc.bounds, abs=1e-6)
        assert (ds.height, ds.width) == (math.ceil(403 * 5 / 10), math.ceil(515 * 5 / 10)) == (202, 258)
        heat = ds.read(1)
        assert np.isfinite(heat).all() and 0 <= heat.min() and heat.max() <= 1
    full = tmp_path / "heat5.tif"
    r = run("heatmap", scene, "red", "-o", full, "--model", tiny_bundle, "--scales-m", "160,320")
    assert r.exit_code == 0, r.output
    with rasterio.open(full) as ds, rasterio.open(scene) as sc:
        assert (ds.height, ds.width) == (403, 515) and ds.transform == sc.transform
    assert "skipped)" in r.output and " 0 from the index" not in r.output  # the index of the 1st run
    assert sidecar_path(scene) == tmp_path / "rgbn_5m.tif.rsclip-index.parquet" and sidecar_path(scene).is_file()


# ---- real AID imagery with the shipped default model -----------------------------------------------------------
AID_CLASSES = ("Forest", "Farmland", "Parking", "DenseResidential")
AID_MIN_MEAN_AUC = 0.95
# RSCLIP_GEO_TEST_MODEL: run this test with another bundle folder (e.g. a candidate before it is installed)
REAL_MODEL = Path(os.environ.get("RSCLIP_GEO_TEST_MODEL") or DEFAULT_MODEL_DIR)


@pytest.mark.skipif(not (REAL_MODEL / "model.json").is_file(),
                    reason=f"default model not installed at {REAL_MODEL} (being trained)")
def test_aid_mosaic_localisation_with_default_model(shared_data, tmp_path):
    """Mean ROC AUC of the four class-query heatmaps on a real AID mosaic (seed 0) must be >= 0.95.

    Measured (python -m tests.utils.mosaic --report --model BUNDLE --seeds 0,1,2,3,4; 4x4 cells of 150 px
    held-out AID 'val' images, windows 75 + 150 px at half-window stride, default smoothing) with the
    default-config model rsclip-effnetlite0-minilm (EfficientNet-Lite0 + MiniLM, 128 px):

        class              query                seed0  seed1  seed2  seed3  seed4   mean
        Forest             'forest'             0.999  0.979  0.995  0.996  0.999  0.994
        Farmland           'farmland'           0.995  0.990  0.983  0.996  0.997  0.992
        Parking            'parking lot'        0.995  0.989  0.995  0.999  0.997  0.995
        DenseResidential   'dense residential'  0.994  0.973  0.998  0.994  0.998  0.991
        mean                                    0.996  0.983  0.993  0.996  0.998  0.993

    0.95 sits below the worst seed (0.983) with room for a retrained or int8 model, and far above what
    broken geometry gives (seed 0, same heatmaps: transposed 0.55, shifted by half a cell 0.63, rows flipped 0.38).
    """
    model = rsclip_geo.load_model(REAL_MODEL, device="cpu")
    mosaic = build_mosaic(tmp_path / "aid.tif", AID_CLASSES, (4, 4), seed=0, aid_root=shared_data / "aid")
    aucs = {}
    for k, name in enumerate(AID_CLASSES):
        heat = rsclip_geo.heatmap(mosaic.path, class_query(name), scales=[75, 150], model=model)
        assert heat.shape == mosaic.truth.shape and heat.crs.to_epsg() == 32633
        assert heat.stats["windows_encoded"] == (heat.stats["windows_used"] if k == 0 else 0)  # index reused
        aucs[name] = roc_auc(heat.array, truth_on_grid(mosaic, heat) == k)
    assert np.mean(list(aucs.values())) >= AID_MIN_MEAN_AUC, aucs
    assert min(aucs.values()) >= 0.9, aucs
