"""GIS outputs: atomic writes, refusal to overwrite, bad output paths, vector round trips, the class raster."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from shapely.geometry import Point, box

import rsclip_geo.outputs.writers as writers
from rsclip_geo.errors import OutputError
from rsclip_geo.raster.tiling import TileSpec, plan_tiles
from rsclip_geo.outputs.writers import PALETTE, atomic_path, check_output, write_class_raster, write_vector

UTM_30M = Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0)


def frame(n=3, offset=0.0):
    geoms = [box(500000 + 100 * i + offset, 4000000, 500100 + 100 * i + offset, 4000100) for i in range(n)]
    return gpd.GeoDataFrame({"row": np.arange(n, dtype=np.int32), "label": [f"class {i}" for i in range(n)],
                             "score": np.linspace(0.25, 0.75, n).astype(np.float32)},
                            geometry=geoms, crs="EPSG:32633")


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write to; as root chmod is not enough, so the immutable flag is tried too."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    immutable = False
    if os.access(d, os.W_OK):  # root
        try:
            immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
        except OSError:
            pass
        if not immutable or os.access(d, os.W_OK):
            d.chmod(0o755)
            pytest.skip("running as root without chattr: cannot make a folder unwritable")
    try:
        yield d
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(d)], check=True)
        d.chmod(0o755)


# ---- atomicity ------------------------------------------------------------------------------------------------------
def test_failure_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.gpkg"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp != target
            tmp.write_bytes(b"half a file")
            Path(str(tmp) + "-journal").write_bytes(b"sidecar")  # drivers' side files go too
            raise RuntimeError("boom")
    assert names_in(tmp_path) == []


@pytest.mark.parametrize("ext", [".gpkg", ".geojson"])
def test_driver_failure_mid_write_leaves_nothing(tmp_path, ext):
    bad = frame()
    bad["z"] = [1 + 2j, 3j, 0j]  # pyogrio creates the file, then fails on this field
    with pytest.raises(Exception):
        write_vector(bad, tmp_path / f"out{ext}")
    assert names_in(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path):
    target = write_vector(frame(2), tmp_path / "out.gpkg")
    old = target.read_bytes()
    bad = frame()
    bad["z"] = [1j, 2j, 3j]
    with pytest.raises(Exception):
        write_vector(bad, target, overwrite=True)
    assert target.read_bytes() == old
    assert names_in(tmp_path) == ["out.gpkg"]
    assert len(gpd.read_file(target)) == 2


def test_existing_file_needs_overwrite(tmp_path):
    target = write_vector(frame(2), tmp_path / "out.geojson")
    old = target.read_bytes()
    with pytest.raises(OutputError, match=r"out\.geojson: already exists.*overwrite"):
        write_vector(frame(3), target)
    assert target.read_bytes() == old
    write_vector(frame(3), target, overwrite=True)
    assert len(gpd.read_file(target)) == 3
    assert names_in(tmp_path) == ["out.geojson"]


def test_file_appearing_during_the_write_is_kept(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(OutputError, match="appeared while writing"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"ours")
            target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert names_in(tmp_path) == ["out.tif"]


# ---- bad output paths -----------------------------------------------------------------------------------------------
def test_missing_folder(tmp_path):
    with pytest.raises(OutputError, match=r"output folder .*nope does not exist"):
        write_vector(frame(), tmp_path / "nope" / "out.gpkg")
    assert names_in(tmp_path) == []


def test_folder_is_a_regular_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="does not exist"):
        write_vector(frame(), tmp_path / "file.txt" / "out.gpkg")
    with pytest.raises(OutputError):
        write_class_raster(tmp_path / "file.txt" / "c.tif", np.zeros((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["a"])
    assert names_in(tmp_path) == ["file.txt"]


def test_output_path_is_a_folder(tmp_path):
    (tmp_path / "d.gpkg").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        write_vector(frame(), tmp_path / "d.gpkg")
    with pytest.raises(OutputError, match="is a folder"):
        write_vector(frame(), tmp_path / "d.gpkg", overwrite=True)


def test_folder_not_writable(readonly_dir):
    with pytest.raises(OutputError, match="not writable"):
        check_output(readonly_dir / "out.gpkg")
    with pytest.raises(OutputError):
        write_vector(frame(), readonly_dir / "out.gpkg")
    assert names_in(readonly_dir) == []


def test_unwritable_folder_that_os_access_calls_writable(readonly_dir, monkeypatch):
    """Windows / ACLs: os.access can say yes; the write must still fail as an OutputError, leaving nothing."""
    monkeypatch.setattr(writers.os, "access", lambda *a, **k: True)
    with pytest.raises(OutputError, match=r"out\.gpkg"):
        write_vector(frame(), readonly_dir / "out.gpkg")
    assert names_in(readonly_dir) == []


@pytest.mark.parametrize("name", ["out.shp", "out.csv", "out", "out.gpkg.bak"])
def test_unsupported_vector_extension(tmp_path, name):
    with pytest.raises(OutputError, match=r"unsupported output extension.*\.gpkg"):
        write_vector(frame(), tmp_path / name)
    assert names_in(tmp_path) == []


def test_unsupported_raster_extension(tmp_path):
    with pytest.raises(OutputError, match=r"\.png"):
        write_class_raster(tmp_path / "c.png", np.zeros((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["a"])


# ---- vector round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiles.gpkg", "tiles.parquet", "tiles.geoparquet", "tiles.geojson", "tiles.json",
                                  "TILES.GPKG"])
def test_vector_round_trip(tmp_path, name):
    gdf = frame(4)
    path = write_vector(gdf, tmp_path / name)
    assert path == tmp_path / name and names_in(tmp_path) == [name]
    back = gpd.read_parquet(path) if "parquet" in name else gpd.read_file(path)
    assert back.crs == CRS.from_epsg(32633)
    assert back["label"].tolist() == gdf["label"].tolist()
    assert back["row"].tolist() == [0, 1, 2, 3]
    assert back["score"].to_numpy() == pytest.approx(gdf["score"].to_numpy())
    for got, want in zip(back.geometry, gdf.geometry):
        assert got.equals(want)
    if name.lower().endswith(".gpkg"):
        assert [layer[0] for layer in pyogrio.list_layers(path)] == [Path(name).stem]


def test_vector_layer_name_and_points(tmp_path):
    gdf = gpd.GeoDataFrame({"v": [1]}, geometry=[Point(10.5, 45.25)], crs="EPSG:4326")
    path = write_vector(gdf, tmp_path / "p.gpkg", layer="hits")
    assert [layer[0] for layer in pyogrio.list_layers(path)] == ["hits"]
    back = gpd.read_file(path, layer="hits")
    assert back.crs == CRS.from_epsg(4326) and back.geometry.iloc[0].equals(Point(10.5, 45.25))


# ---- class raster ---------------------------------------------------------------------------------------------------
NAMES = ["water", "forest & trees", "urban <dense>"]  # XML-special characters must survive the .aux.xml


def _plan(overlap=0.0):
    # edge 'pad': the stride grid (one pixel per tile) is what these writer tests check
    return plan_tiles(100, 70, UTM_30M, "EPSG:32633", TileSpec(size_px=20, overlap=overlap, edge="pad"), 16)


def test_class_raster(tmp_path):
    plan = _plan()  # 5 cols x 4 rows of 20 px = 600 m tiles
    assert (plan.n_rows, plan.n_cols) == (4, 5)
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, (4, 5)).astype(np.uint8)
    classes[0, 0] = 255
    path = write_class_raster(tmp_path / "classes.tif", classes, plan.grid_transform, plan.crs, NAMES)
    assert names_in(tmp_path) == ["classes.tif", "classes.tif.aux.xml"]
    with rasterio.open(path) as ds:
        assert ds.transform == Affine(600.0, 0.0, 500000.0, 0.0, -600.0, 4000000.0)
        assert CRS.from_user_input(ds.crs) == CRS.from_epsg(32633)
        assert (ds.width, ds.height, ds.count, ds.dtypes[0], ds.nodata) == (5, 4, 1, "uint8", 255)
        assert (ds.read(1) == classes).all()
        cmap = ds.colormap(1)
        assert [cmap[i] for i in range(3)] == [(*PALETTE[i], 255) for i in range(3)]
        assert len({cmap[i] for i in range(3)}) == 3
        assert cmap[255][3] == 0  # nodata is transparent
        assert json.loads(ds.tags()["CLASS_NAMES"]) == NAMES
        assert [ds.tags(1)[f"CLASS_{i}"] for i in range(3)] == NAMES
        assert ds.descriptions[0] == "class"
        # grid pixel (r, c) is tile (r, c): same upper-left corner, same size
        for tile in plan:
            x0, _, x1, y1 = plan.footprint(tile).bounds
            assert ds.transform @ (tile.col, tile.row) == (x0, y1)
            assert ds.xy(tile.row, tile.col) == pytest.approx(((x0 + x1) / 2, y1 - 300.0))


def test_class_raster_category_names_read_by_gdal(tmp_path):
    gdal = pytest.importorskip("osgeo.gdal")
    path = write_class_raster(tmp_path / "c.tif", np.zeros((3, 3), np.uint8), UTM_30M, "EPSG:32633", NAMES)
    ds = gdal.Open(str(path))
    try:
        # GDAL 3.6's GTiff loads the .aux.xml lazily, on the first georeferencing/metadata call (as any GIS makes)
        assert ds.GetGeoTransform() == (500000.0, 30.0, 0.0, 4000000.0, 0.0, -30.0)
        assert ds.GetRasterBand(1).GetCategoryNames() == NAMES
        assert ds.GetRasterBand(1).GetRasterColorTable().GetColorEntry(1)[:3] == PALETTE[1]
    finally:
        ds = None


def test_class_raster_with_overlap_grid(tmp_path):
    plan = _plan(overlap=0.5)  # stride 10 px: one class pixel per 300 m step
    classes = np.zeros((plan.n_rows, plan.n_cols), np.uint8)
    path = write_class_raster(tmp_path / "c.tif", classes, plan.grid_transform, plan.crs, ["a", "b"])
    with rasterio.open(path) as ds:
        assert ds.transform == Affine(300.0, 0.0, 500000.0, 0.0, -300.0, 4000000.0)
        assert (ds.width, ds.height) == (plan.n_cols, plan.n_rows) == (9, 6)


def test_class_raster_overwrite_rules(tmp_path):
    path = tmp_path / "c.tif"
    write_class_raster(path, np.zeros((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["a", "b"])
    with pytest.raises(OutputError, match="already exists"):
        write_class_raster(path, np.ones((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["a", "b"])
    path.unlink()  # a stale .aux.xml alone also blocks the write
    with pytest.raises(OutputError, match=r"c\.tif\.aux\.xml: already exists"):
        write_class_raster(path, np.ones((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["a", "b"])
    assert names_in(tmp_path) == ["c.tif.aux.xml"]
    write_class_raster(path, np.ones((2, 2), np.uint8), UTM_30M, "EPSG:32633", ["x", "y"], overwrite=True)
    with rasterio.open(path) as ds:
        assert (ds.read(1) == 1).all() and json.loads(ds.tags()["CLASS_NAMES"]) == ["x", "y"]
    assert "<Category>y</Category>" in (tmp_path / "c.tif.aux.xml").read_text()
    assert names_in(tmp_path) == ["c.tif", "c.tif.aux.xml"]


def test_class_raster_too_many_classes(tmp_path):
    with pytest.raises(OutputError, match="255 classes"):
        write_class_raster(tmp_path / "c.tif", np.zeros((2, 2), np.uint8), UTM_30M, "EPSG:32633",
                           [f"c{i}" for i in range(255)])
    assert names_in(tmp_path) == []


def test_classify_to_class_raster(tmp_path, tiny_model):
    """tile_classify -> class grid -> class raster: pixel (r, c) holds tile (r, c)'s label, on the plan's grid;
    Classification.write_class_raster: the same classes on the scene's own grid."""
    from rsclip_geo.tasks.classify import tile_classify
    from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

    layout = [[RED, GREEN, BLUE], [GREEN, BLUE, RED]]
    data = colour_blocks(layout, 16)
    data[:, 16:, 32:] = 0  # tile (1, 2) is nodata -> raster nodata
    scene = write_geotiff(tmp_path / "s.tif", data, nodata=0)
    result = tile_classify(scene, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16))
    plan = result.plan
    names = result.labels
    assert names == result.class_names == ["red", "green", "blue"]
    path = write_class_raster(tmp_path / "c.tif", result.class_grid(), plan.grid_transform, plan.crs, names)
    with rasterio.open(path) as ds:
        assert ds.read(1).tolist() == [[0, 1, 2], [1, 2, 255]]
        assert ds.transform == Affine(160.0, 0.0, 500000.0, 0.0, -160.0, 5000000.0)
        assert CRS.from_user_input(ds.crs) == CRS.from_epsg(32633)
    # the result's own raster: on the scene's 10 m grid, each pixel its tile's class, names and nodata kept
    scene_path = result.write_class_raster(tmp_path / "scene_grid.tif")
    with rasterio.open(scene_path) as ds:
        assert ds.transform == Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0) and ds.shape == (32, 48)
        assert CRS.from_user_input(ds.crs) == CRS.from_epsg(32633) and ds.nodata == 255
        assert (ds.read(1) == np.kron([[0, 1, 2], [1, 2, 255]], np.ones((16, 16), np.uint8))).all()
        assert json.loads(ds.tags()["CLASS_NAMES"]) == names
    with pytest.raises(OutputError, match="already exists"):
        result.write_class_raster(scene_path)
