"""Outputs never land on inputs, whatever --overwrite says (issue 15, defect 3)."""

from __future__ import annotations

import hashlib
import os

import pytest
from click.testing import CliRunner

from rsclip_geo.cli import main
from rsclip_geo.errors import OutputError
from rsclip_geo.outputs.guard import check_outputs_apart
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE], [BLUE, RED, GREEN]]


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _aliases(scene, tmp_path):
    """The scene itself, a symlink to it, a hard link to it, and a path through a symlinked folder."""
    sym = tmp_path / "link.tif"
    sym.symlink_to(scene)
    hard = tmp_path / "hard.tif"
    os.link(scene, hard)
    folder_link = tmp_path / "folder_link"
    folder_link.symlink_to(tmp_path, target_is_directory=True)
    return {"same": scene, "symlink": sym, "hardlink": hard, "via_folder_link": folder_link / "scene.tif"}


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "via_folder_link"])
def test_guard_refuses_every_alias_of_an_input(scene, tmp_path, alias):
    out = _aliases(scene, tmp_path)[alias]
    with pytest.raises(OutputError, match=r"--raster.*is the input .*scene\.tif.*whatever --overwrite says"):
        check_outputs_apart({"-o": tmp_path / "labels.gpkg", "--raster": out}, [scene])
    check_outputs_apart({"--raster": tmp_path / "classes.tif"}, [scene])  # a different file is fine


def test_guard_sees_files_inside_gdal_names_and_same_outputs(scene, tmp_path):
    gpkg = tmp_path / "raster.gpkg"
    gpkg.write_bytes(b"stand-in")  # only the name matters here
    with pytest.raises(OutputError, match="is the input GPKG:"):
        check_outputs_apart({"-o": gpkg}, [f"GPKG:{gpkg}:table"])
    with pytest.raises(OutputError, match="are the same file"):
        check_outputs_apart({"-o": tmp_path / "a.tif", "--heatmap": tmp_path / "." / "a.tif"}, [scene])


def test_folder_source_protects_its_rasters_and_indexes_only(scene, tmp_path):
    hits = tmp_path / "hits.parquet"
    hits.write_bytes(b"old hits")
    check_outputs_apart({"-o": hits}, [tmp_path])  # replacing an old result in the folder is allowed
    with pytest.raises(OutputError, match="read from the folder"):
        check_outputs_apart({"--heatmap": scene}, [tmp_path])


def _base(tiny_bundle):
    return ("--model", tiny_bundle, "--device", "cpu", "-q", "--overwrite")


@pytest.mark.parametrize("command", ["classify-raster", "classify-vector", "heatmap", "heatmap-index",
                                     "search-heatmap", "search-output", "count", "index"])
def test_commands_never_write_over_the_scene(tiny_bundle, scene, tmp_path, command):
    before = _digest(scene)
    link = tmp_path / "link.tif"
    link.symlink_to(scene)
    base = _base(tiny_bundle)
    labels = ("--labels", "red,green,blue", "--tile-size", 32)
    args = {
        "classify-raster": ("tile-classify", scene, *labels, "-o", tmp_path / "l.gpkg", "--raster", link),
        "classify-vector": ("tile-classify", scene, "--labels-file", tmp_path / "labels.json", "--tile-size", 32,
                            "-o", tmp_path / "labels.json"),  # the labels file, read as input, as output
        "heatmap": ("heatmap", scene, "red", "-o", link, "--scales", 32),
        "heatmap-index": ("heatmap", scene, "red", "-o", tmp_path / "h.tif", "--scales", 32, "--index", scene),
        "search-heatmap": ("search", scene, "red", "-o", tmp_path / "hits.gpkg", "--heatmap", scene,
                           "--tile-size", 32),
        "search-output": ("search", link, "red", "-o", scene, "--tile-size", 32),
        "count": ("count", scene, "car", "-o", link, "--tile-size", 32),
        "index": ("index", scene, "-o", link, "--tile-size", 32),
    }[command]
    (tmp_path / "labels.json").write_text("red\ngreen\nblue\n")
    result = _run(*args, *base)
    assert result.exit_code != 0, result.output
    assert "refusing to write over an input" in result.output, result.output
    assert _digest(scene) == before
    assert (tmp_path / "labels.json").read_text() == "red\ngreen\nblue\n"


def test_segment_never_writes_over_the_scene(scene, tmp_path, tmp_path_factory):
    """segment had no guard: `--raster scene.tif --overwrite` replaced the scene with the score raster."""
    from tests.utils.tiny_dense import build_tiny_dense_bundle

    bundle = build_tiny_dense_bundle(tmp_path_factory.mktemp("tiny_dense"))
    before = _digest(scene)
    link = tmp_path / "link.tif"
    link.symlink_to(scene)
    for raster in (scene, link):
        result = _run("segment", scene, "red", "-o", tmp_path / "objects.gpkg", "--raster", raster,
                      "--model", bundle, "-q", "--overwrite")
        assert result.exit_code == 1 and "(--raster): is the input" in result.output, result.output
    assert _digest(scene) == before and not (tmp_path / "objects.gpkg").exists()


def test_outputs_never_land_on_the_scene_caches(tiny_bundle, scene, tmp_path):
    """An -o aimed at the scene's sidecar index was written after the run had just read or rebuilt it."""
    from rsclip_geo.embeddings.dense_cells import DENSE_SUFFIX
    from rsclip_geo.embeddings.index import sidecar_path
    from rsclip_geo.outputs.guard import scene_caches

    index = sidecar_path(scene)
    assert scene_caches([scene, None, tmp_path / "missing.tif", index]) == [
        index, sidecar_path(scene, DENSE_SUFFIX), sidecar_path(scene, DENSE_SUFFIX).with_suffix(".json")]
    base = ("--model", tiny_bundle, "--device", "cpu", "-q", "--overwrite")
    assert _run("index", scene, "--tile-size", 32, *base).exit_code == 0 and index.is_file()  # the sidecar itself
    kept = _digest(index)
    for args in (("search", scene, "red", "-o", index, "--tile-size", 32),
                 ("count", scene, "car", "-o", index, "--tile-size", 32),
                 ("tile-classify", scene, "--labels", "red,blue", "-o", index, "--tile-size", 32),
                 ("heatmap", scene, "red", "-o", sidecar_path(scene, DENSE_SUFFIX).with_suffix(".json"),
                  "--scales", 32)):  # a cache not written yet is protected too
        result = _run(*args, *base)
        assert result.exit_code == 1 and "-o/--output): is the input" in result.output, result.output
    assert _digest(index) == kept
    result = _run("heatmap", scene, "red", "-o", tmp_path / "h.tif", "--index", index, "--scales", 32, *base)
    assert result.exit_code == 0, result.output  # the sidecar as --index is what heatmap does by default
