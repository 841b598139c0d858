"""Quick-look PNGs: size rules, the scene's own stretch, and overlays that change the image exactly where they are."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.outputs.preview import (LEGEND_HEIGHT, NODATA_RGB, heatmap_preview, preview_shape, quicklook)
from rsclip_geo.raster.scene import Scene
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE], [BLUE, BLUE, RED]]  # red tiles: (0, 0) and (1, 2)


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))  # 96 x 64 px


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_preview_shape_rules():
    assert preview_shape(3000, 1000) == (1200, 400)  # long side down to 1200
    assert preview_shape(1000, 3000) == (400, 1200)
    assert preview_shape(800, 600) == (800, 600)  # kept
    assert preview_shape(96, 64) == (576, 384)  # small: whole-number enlargement to >= 512


def test_quicklook_uses_the_scene_stretch_and_downsamples(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((1, 1000, 3000)) * 4000 + 1000).astype(np.uint16)
    path = write_geotiff(tmp_path / "pan.tif", data)
    ql = quicklook(path)
    assert ql.size == (1200, 400) and ql.valid.all()
    assert (ql.rgb[..., 0] == ql.rgb[..., 1]).all() and (ql.rgb[..., 1] == ql.rgb[..., 2]).all()  # 1 band -> grey
    with Scene(path) as sc:
        lo, hi = sc.stretch.low[0], sc.stretch.high[0]
    assert 1000 < lo < hi < 5000  # the 2-98 % stretch of the scene, not a fixed 0..65535 map
    mid = ql.rgb[..., 0].mean()
    assert 90 < mid < 165  # averaged noise around the middle of the stretch


def test_heatmap_preview_blends_only_where_there_is_data(tmp_path, tiny_model):
    data = colour_blocks(LAYOUT, 32)
    data[:, :, 64:] = 0  # right third nodata
    path = write_geotiff(tmp_path / "nodata.tif", data, nodata=0)
    heat = rsclip_geo.heatmap(path, "red", scales=[16, 32], model=tiny_model)
    out = heatmap_preview(path, heat, tmp_path / "heat.png")
    image, plain = png(out), quicklook(path).rgb
    assert image.shape == (384 + LEGEND_HEIGHT, 576, 3)
    top = image[:384]
    changed = (top != plain).any(axis=2)
    assert changed[:, :384].mean() > 0.99  # every pixel with heat is tinted (scene columns 0..63, 6x enlarged)
    assert not changed[:, 384:].any() and (top[:, 384:] == NODATA_RGB).all()  # nodata: untouched grey
    legend = image[384:]
    assert (legend != 255).any(axis=2).sum() > 1000  # colour bar and text
    # hot where red is: the red block (top left) is tinted towards the ramp's red end, green block is not
    assert top[40:60, 40:60, 0].mean() > top[40:60, 250:270, 0].mean()


def test_search_preview_outlines_and_ranks_hits(scene, tiny_bundle, tmp_path):
    out = tmp_path / "hits.png"
    r = run("search", scene, "red", "--model", tiny_bundle, "--tile-size", 32, "--top", 2, "-o",
            tmp_path / "hits.gpkg", "--preview", out, "-q")
    assert r.exit_code == 0, r.output
    image, plain = png(out), quicklook(scene).rgb
    assert image.shape == (384 + LEGEND_HEIGHT, 576, 3)
    changed = (image[:384] != plain).any(axis=2)
    k = 6  # 96 x 64 px enlarged 6x
    # hits are the red tiles (0, 0) and (1, 2): outlines on their borders, rank labels at their centres
    assert changed[0, 10:180].all() and changed[10:180, 0].all()  # image edge: half the line width
    assert changed[10:180, 190:194].any(axis=1).all() and changed[190:194, 10:180].any(axis=0).all()
    assert changed[int(16 * k) - 8:int(16 * k) + 8, int(16 * k) - 8:int(16 * k) + 8].any()
    assert changed[int(48 * k) - 8:int(48 * k) + 8, int(80 * k) - 8:int(80 * k) + 8].any()
    # tiles that are not hits stay as the plain scene (away from the shared borders)
    assert not changed[10:180, 200:370].any()  # tile (0, 1), green
    assert not changed[200:370, 10:180].any()  # tile (1, 0), blue


def test_count_and_heatmap_cli_previews(scene, tiny_bundle, tmp_path):
    r = run("count", scene, "car", "--model", tiny_bundle, "--tile-size", 32, "--max", 3, "-o",
            tmp_path / "c.gpkg", "--preview", tmp_path / "c.png", "-q")
    assert r.exit_code == 0, r.output
    image, plain = png(tmp_path / "c.png"), quicklook(scene).rgb
    assert image.shape == (384 + LEGEND_HEIGHT, 576, 3)
    assert (image[:384] != plain).any(axis=2).mean() > 0.95  # every tile tinted by its count
    r = run("heatmap", scene, "blue", "--model", tiny_bundle, "--scales", "16,32", "-o", tmp_path / "h.tif",
            "--preview", tmp_path / "h.png", "-q")
    assert r.exit_code == 0, r.output
    assert png(tmp_path / "h.png").shape == (384 + LEGEND_HEIGHT, 576, 3)
    r = run("heatmap", scene, "blue", "--model", tiny_bundle, "--scales", "16", "-o", tmp_path / "h2.tif",
            "--preview", tmp_path / "h.jpg")
    assert r.exit_code == 1 and "unsupported output extension" in r.output
    assert not (tmp_path / "h2.tif").exists()
