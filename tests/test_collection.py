"""Reading a collection of scenes: folder, list file, STAC ItemCollection with local hrefs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rsclip_geo.batch.collection import SceneRef, read_collection, read_stac
from rsclip_geo.errors import DatasetError
from tests.utils.rasters import write_geotiff


def _tif(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_geotiff(path, np.full((3, 8, 8), 100, np.uint8))


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    for name in ("b.tif", "a.TIFF", "sub/c.tif"):
        _tif(d / name)
    (d / "notes.txt").write_text("not a raster")
    (d / "a.TIFF.aux.xml").write_text("<PAMDataset/>")
    (d / ".hidden.tif").write_bytes(b"")
    return d


def test_folder_lists_rasters_sorted_not_hidden(data):
    coll = read_collection(data)
    assert [s.path.name for s in coll.scenes] == ["a.TIFF", "b.tif"]
    assert all(s.path.is_absolute() for s in coll.scenes)
    deep = read_collection(data, recursive=True)
    assert [s.name for s in deep.scenes] == ["a.TIFF", "b.tif", "sub/c.tif"]


def test_empty_folder_and_missing_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no rasters.*--recursive"):
        read_collection(tmp_path / "empty")
    with pytest.raises(DatasetError, match="nowhere.*does not exist"):
        read_collection(tmp_path / "nowhere")


def test_list_file_relative_to_its_folder_with_comments(data, tmp_path, monkeypatch):
    lst = data / "scenes.txt"
    lst.write_text(f"# my scenes\nb.tif\n\n  sub/c.tif  \n{(data / 'a.TIFF').resolve()}\n")
    monkeypatch.chdir(tmp_path)  # relative lines must not depend on the working directory
    coll = read_collection(lst)
    assert [s.path for s in coll.scenes] == [(data / p).resolve() for p in ("b.tif", "sub/c.tif", "a.TIFF")]
    assert not coll.problems


def test_list_file_missing_entries_named_with_line(data):
    lst = data / "scenes.lst"
    lst.write_text("b.tif\nmissing_one.tif\nsub\n")
    with pytest.raises(DatasetError) as err:
        read_collection(lst)
    msg = str(err.value)
    assert "missing_one.tif" in msg and "scenes.lst line 2" in msg and "2 unusable entries" in msg
    assert "is a folder" in msg
    lenient = read_collection(lst, strict=False)
    assert [s.path.name for s in lenient.scenes] == ["b.tif"]
    assert [p.name for p in lenient.problems] == ["missing_one.tif", "sub"]


def test_duplicates_processed_once(data):
    coll = read_collection([data / "b.tif", data / "sub" / ".." / "b.tif", data / "a.TIFF"])
    assert [s.path.name for s in coll.scenes] == ["b.tif", "a.TIFF"]


def test_partition_keys_unique_and_safe(tmp_path):
    a = SceneRef(tmp_path / "x" / "scene.tif", "scene.tif")
    b = SceneRef(tmp_path / "y" / "scene.tif", "scene.tif")
    assert a.key != b.key and a.key.startswith("scene-")
    odd = SceneRef(tmp_path / "z.tif", "S2B 31UFU/2020:05 ../x")
    assert "/" not in odd.key and ":" not in odd.key and " " not in odd.key


# ---- STAC ----------------------------------------------------------------------
def _item(item_id: str, assets: dict) -> dict:
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "properties": {"datetime": "2020-05-18T00:00:00Z"},
            "geometry": None, "links": [], "assets": assets}


@pytest.fixture()
def stac(tmp_path):
    """Hand-written ItemCollection: relative, absolute and file:// hrefs, one item without a raster asset."""
    root = tmp_path / "stac"
    _tif(root / "imgs" / "one_visual.tif")
    _tif(root / "imgs" / "one_nir.tif")
    two = _tif(tmp_path / "elsewhere" / "two.tif")
    _tif(root / "three.tif")
    items = [
        _item("one", {"thumbnail": {"href": "imgs/one.png", "type": "image/png", "roles": ["thumbnail"]},
                      "nir": {"href": "imgs/one_nir.tif", "type": "image/tiff; application=geotiff"},
                      "visual": {"href": "./imgs/one_visual.tif",
                                 "type": "image/tiff; application=geotiff; profile=cloud-optimized"}}),
        _item("two", {"visual": {"href": two.resolve().as_uri()}}),  # no media type: judged by the .tif suffix
        _item("meta-only", {"metadata": {"href": "meta.xml", "type": "application/xml"}}),
        _item("three", {"data": {"href": str((root / "three.tif").resolve()), "type": "image/tiff"},
                        "visual": {"href": "https://example.com/three_visual.tif", "type": "image/tiff"}}),
    ]
    path = root / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def test_stac_first_geotiff_asset_relative_hrefs(stac):
    coll = read_stac(stac)
    by_id = {s.name: s for s in coll.scenes}
    assert set(by_id) == {"one", "two", "three"}
    assert by_id["one"].path == (stac.parent / "imgs" / "one_nir.tif").resolve()  # first GeoTIFF in item order
    assert by_id["one"].asset == "nir"
    assert by_id["two"].path.name == "two.tif"
    assert by_id["three"].asset == "data"
    # the item with no raster asset is a problem, named, with its asset keys; not silently dropped
    assert [(p.name, p.message) for p in coll.problems] == [
        ("meta-only", "no GeoTIFF asset (assets: metadata); choose one with --asset KEY")]


def test_stac_asset_by_key(stac):
    coll = read_collection(stac, asset="visual", strict=False)
    by_id = {s.name: s for s in coll.scenes}
    assert by_id["one"].path.name == "one_visual.tif" and by_id["two"].asset == "visual"
    problems = {p.name: p.message for p in coll.problems}
    assert set(problems) == {"meta-only", "three"}
    assert "no asset 'visual' (assets: metadata)" in problems["meta-only"]
    assert "not a local file" in problems["three"] and "https://example.com" in problems["three"]


def test_stac_strict_names_every_bad_item(stac):
    with pytest.raises(DatasetError) as err:
        read_collection(stac, asset="visual")
    assert "items.json" in str(err.value) and "meta-only" in str(err.value) and "three" in str(err.value)


def test_stac_missing_local_file(stac):
    (stac.parent / "imgs" / "one_nir.tif").unlink()
    coll = read_collection(stac, strict=False)
    problems = {p.name: p.message for p in coll.problems}
    assert "asset 'nir': file does not exist" in problems["one"] and "one_nir.tif" in problems["one"]


def test_stac_single_item_and_other_documents(tmp_path, stac):
    item = json.loads(stac.read_text())["features"][1]
    single = tmp_path / "item.geojson"
    single.write_text(json.dumps(item))
    assert [s.name for s in read_collection(single).scenes] == ["two"]
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"type": "Catalog", "id": "c", "links": []}))
    with pytest.raises(DatasetError, match="STAC Catalog, not an ItemCollection"):
        read_collection(catalog)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json: not a readable JSON"):
        read_collection(broken)


def test_asset_only_for_stac(data):
    with pytest.raises(DatasetError, match="only applies to a STAC"):
        read_collection(data, asset="visual")
