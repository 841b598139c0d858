"""`rsclip-geo tile-classify` end to end: outputs, and every bad input gives a clear error and no output."""

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from rsclip_geo.cli import main
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE], [BLUE, RED, GREEN]]
EXPECTED = [["red", "green", "blue"], ["blue", "red", "green"]]


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def base(tiny_bundle, scene, out, *extra):
    return run("tile-classify", scene, "--labels", "red,green,blue", "--model", tiny_bundle, "--device", "cpu",
               "--tile-size", 32, "-o", out, *extra)


def outputs(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "scene.tif")


def test_vector_and_raster_outputs(tiny_bundle, scene, tmp_path):
    import geopandas as gpd

    out, ras = tmp_path / "labels.gpkg", tmp_path / "classes.tif"
    result = base(tiny_bundle, scene, out, "--raster", ras, "--top-k", 2)
    assert result.exit_code == 0, result.output
    assert "6 tiles labelled, 0 skipped" in result.output and "CPUExecutionProvider" in result.output
    gdf = gpd.read_file(out)
    assert gdf.crs.to_epsg() == 32633
    got = {(r, c): lab for r, c, lab in zip(gdf["row"], gdf["col"], gdf["label"])}
    assert got == {(r, c): EXPECTED[r][c] for r in range(2) for c in range(3)}
    assert {"label_1", "score_1", "label_2", "score_2", "valid_frac"} <= set(gdf.columns)
    assert (gdf["score_1"] >= gdf["score_2"]).all()
    tile = gdf[(gdf["row"] == 1) & (gdf["col"] == 2)].geometry.iloc[0]
    assert tile.bounds == (500640.0, 4999360.0, 500960.0, 4999680.0)  # 10 m pixels, 32 px tiles
    with rasterio.open(ras) as r:
        names = json.loads(r.tags()["CLASS_NAMES"])
        grid = r.read(1)
        assert r.crs.to_epsg() == 32633 and r.transform.a == 10 and r.transform.e == -10  # the scene's grid
        assert (r.transform.c, r.transform.f, r.width, r.height) == (500000.0, 5000000.0, 96, 64)
        assert r.colormap(1)[0][:3] != r.colormap(1)[1][:3]
    assert (grid == np.kron(grid[::32, ::32], np.ones((32, 32), np.uint8))).all()  # one class per 32 px tile
    assert [[names[v] for v in row] for row in grid[::32, ::32]] == EXPECTED


def test_default_output_name_and_no_overwrite(tiny_bundle, scene, tmp_path):
    result = run("tile-classify", scene, "--labels", "red,green,blue", "--model", tiny_bundle, "--tile-size", 32, "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "scene_labels.gpkg"
    assert out.is_file()
    before = out.read_bytes()
    again = run("tile-classify", scene, "--labels", "red,green", "--model", tiny_bundle, "--tile-size", 32, "-q")
    assert again.exit_code == 1 and "already exists" in again.output and "--overwrite" in again.output
    assert out.read_bytes() == before
    third = run("tile-classify", scene, "--labels", "red,green", "--model", tiny_bundle, "--tile-size", 32, "-q",
                "--overwrite")
    assert third.exit_code == 0 and out.read_bytes() != before


def test_min_score_unknown_in_raster(tiny_bundle, scene, tmp_path):
    import geopandas as gpd

    ras = tmp_path / "c.tif"
    result = base(tiny_bundle, scene, tmp_path / "o.gpkg", "--min-score", 0.999999, "--raster", ras, "-q")
    assert result.exit_code == 0, result.output
    assert set(gpd.read_file(tmp_path / "o.gpkg")["label"]) == {"unknown"}
    with rasterio.open(ras) as r:
        names = json.loads(r.tags()["CLASS_NAMES"])
        assert names[-1] == "unknown" and set(np.unique(r.read(1))) == {names.index("unknown")}


def test_labels_file_option(tiny_bundle, scene, tmp_path):
    import geopandas as gpd

    lf = tmp_path / "labels.txt"
    lf.write_text("water: blue\nfield: green\nroof: red\n")
    out = tmp_path / "o.gpkg"
    result = run("tile-classify", scene, "--labels-file", lf, "--model", tiny_bundle, "--tile-size", 32, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    labels = gpd.read_file(out).sort_values(["row", "col"])["label"].tolist()
    assert labels == ["roof", "field", "water", "water", "roof", "field"]


def test_bands_reorder(tiny_bundle, tmp_path):
    """A file stored blue,green,red read with --bands 3,2,1 is labelled like the RGB original."""
    import geopandas as gpd

    bgr = write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32)[::-1].copy())
    out = tmp_path / "o.gpkg"
    assert base(tiny_bundle, bgr, out, "--bands", "3,2,1", "-q").exit_code == 0
    gdf = gpd.read_file(out)
    assert {(r, c): l for r, c, l in zip(gdf["row"], gdf["col"], gdf["label"])} == {
        (r, c): EXPECTED[r][c] for r in range(2) for c in range(3)}


def test_skipped_nodata_tiles(tiny_bundle, tmp_path):
    import geopandas as gpd

    data = colour_blocks(LAYOUT, 32)
    data[:, :32, :32] = 0
    scene = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    result = base(tiny_bundle, scene, tmp_path / "o.gpkg")
    assert result.exit_code == 0 and "5 tiles labelled, 1 skipped" in result.output
    assert len(gpd.read_file(tmp_path / "o.gpkg")) == 5


# ---- every bad input: a clear message, exit code 1, nothing written ---------------------------------

def _bad(tiny_bundle, tmp_path, scene, *extra, labels="red,green,blue"):
    out = tmp_path / "o.gpkg"
    result = run("tile-classify", scene, "--labels", labels, "--model", tiny_bundle, "--tile-size", 32, "-o", out,
                 "--raster", tmp_path / "o.tif", *extra)
    assert result.exit_code != 0
    assert not out.exists() and not (tmp_path / "o.tif").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    return result.output


def test_non_raster(tiny_bundle, tmp_path):
    f = tmp_path / "notes.tif"
    f.write_text("this is not a raster")
    assert "not a readable raster" in _bad(tiny_bundle, tmp_path, f) and "notes.tif" in _bad(tiny_bundle, tmp_path, f)


def test_missing_scene(tiny_bundle, tmp_path):
    assert "does not exist" in _bad(tiny_bundle, tmp_path, tmp_path / "nope.tif")


def test_truncated_geotiff(tiny_bundle, tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 256, 256), dtype=np.uint8)
    path = write_geotiff(tmp_path / "cut.tif", data, tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    msg = _bad(tiny_bundle, tmp_path, path)
    assert "cut.tif" in msg and ("corrupt" in msg or "not a readable raster" in msg)


def test_no_crs_warns_and_uses_pixels(tiny_bundle, tmp_path):
    import geopandas as gpd
    from affine import Affine

    scene = write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32), crs=None, transform=Affine.identity())
    with pytest.warns(UserWarning, match="no CRS"):
        result = base(tiny_bundle, scene, tmp_path / "o.gpkg", "-q")
    assert result.exit_code == 0, result.output
    gdf = gpd.read_file(tmp_path / "o.gpkg")
    assert gdf.crs is None
    assert gdf[(gdf["row"] == 1) & (gdf["col"] == 2)].geometry.iloc[0].bounds == (64.0, 32.0, 96.0, 64.0)


def test_smaller_than_one_tile(tiny_bundle, tmp_path):
    scene = write_geotiff(tmp_path / "small.tif", colour_blocks([[RED]], 20))
    msg = _bad(tiny_bundle, tmp_path, scene)
    assert "20x20 px, smaller than one tile (32x32 px)" in msg


def test_all_nodata(tiny_bundle, tmp_path):
    scene = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    assert "every pixel is invalid" in _bad(tiny_bundle, tmp_path, scene)


def test_unknown_band(tiny_bundle, scene, tmp_path):
    msg = _bad(tiny_bundle, tmp_path, scene, "--bands", "1,2,5")
    assert "band 5 does not exist" in msg and "3 bands" in msg


@pytest.mark.parametrize("labels, message", [(" , ", "no labels"), ("red,blue,red", "duplicate label 'red'")])
def test_bad_labels(tiny_bundle, scene, tmp_path, labels, message):
    assert message in _bad(tiny_bundle, tmp_path, scene, labels=labels)


def test_output_folder_missing(tiny_bundle, scene, tmp_path):
    result = base(tiny_bundle, scene, tmp_path / "no" / "such" / "o.gpkg")
    assert result.exit_code == 1 and "output folder" in result.output and "does not exist" in result.output


def test_unwritable_output(tiny_bundle, scene, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = base(tiny_bundle, scene, blocker / "o.gpkg")  # parent is a regular file: never writable
    assert result.exit_code == 1 and "does not exist" in result.output


def test_unsupported_extension(tiny_bundle, scene, tmp_path):
    result = base(tiny_bundle, scene, tmp_path / "o.shp")
    assert result.exit_code == 1 and "unsupported output extension '.shp'" in result.output


def test_labels_and_labels_file_exclusive(tiny_bundle, scene, tmp_path):
    result = run("tile-classify", scene, "--model", tiny_bundle)
    assert result.exit_code == 2 and "exactly one of --labels or --labels-file" in result.output


def test_rotations_option_reaches_the_model(tmp_path):
    """A model that sees only a tile's top half calls a tile whose top 3/8 is red 'red'; averaged over the four
    quarter turns it sees mostly blue."""
    from tests.utils.tiny_bundle import build_tiny_bundle

    upright = build_tiny_bundle(tmp_path / "upright", size=16, top_half=True)
    tile = np.empty((3, 32, 32), np.uint8)
    tile[:, :12] = np.array(RED, np.uint8)[:, None, None]
    tile[:, 12:] = np.array(BLUE, np.uint8)[:, None, None]
    scene = write_geotiff(tmp_path / "scene.tif", np.concatenate([tile, tile], axis=2))
    labels = {}
    for rotations in ("1", "4"):
        out = tmp_path / f"labels{rotations}.gpkg"
        result = run("tile-classify", scene, "--labels", "red,blue", "--model", upright, "--device", "cpu",
                     "--tile-size", 32, "-o", out, "--rotations", rotations)
        assert result.exit_code == 0, result.output
        assert ("tiny-rgb (rotations 4)" in result.output) == (rotations == "4")  # the summary names the run
        import geopandas as gpd
        labels[rotations] = list(gpd.read_file(out)["label"])
    assert labels == {"1": ["red", "red"], "4": ["blue", "blue"]}
    bad = run("tile-classify", scene, "--labels", "red,blue", "--model", upright, "--rotations", "3")
    assert bad.exit_code == 2 and "'3' is not one of '1', '2', '4'" in bad.output
