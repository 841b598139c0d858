"""Hostile inputs and failures (issue 15): scenes changing under the indexer, damaged and unsaveable indexes,
full disks, killed writers, hostile label files, API misuse, degenerate tilings."""

from __future__ import annotations

import errno
import logging
import os
import shutil

import numpy as np
import pytest

from rsclip_geo.errors import IndexFileError, OutputError, RasterInputError
from rsclip_geo.embeddings.key import scene_fingerprint
from rsclip_geo.embeddings.index import (build_index, load_or_build_index, read_index, read_index_meta,
                              sidecar_path, write_index)
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE], [BLUE, RED, GREEN]]
OTHER = [[GREEN, GREEN, GREEN], [RED, RED, RED]]
T32 = [TileSpec(size_px=32)]


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))


def _replace_scene(path, layout):
    """Rewrite ``path`` as another file (new inode, as `cp new.tif scene.tif` via a temp file does)."""
    tmp = path.with_name("incoming.tif")
    write_geotiff(tmp, colour_blocks(layout, 32))
    os.replace(tmp, path)


# ---- 6: a scene changed while it is being indexed --------------------------------------------------------------
def test_scene_changed_during_indexing_is_indexed_again(tiny_model, scene, caplog):
    calls = {"n": 0}

    def change_once(done, total):
        calls["n"] += 1
        if calls["n"] == 1:
            _replace_scene(scene, OTHER)

    with caplog.at_level(logging.WARNING):
        index = load_or_build_index(scene, tiny_model, T32, progress=change_once)
    assert "changed while it was being indexed" in caplog.text
    fresh = build_index(scene, tiny_model, T32)  # the new pixels, read while nothing changes them
    np.testing.assert_allclose(index.embeddings, fresh.embeddings, atol=1e-6)
    saved = read_index_meta(sidecar_path(scene))
    assert saved["scene"] == scene_fingerprint(scene)
    np.testing.assert_allclose(read_index(sidecar_path(scene)).embeddings, fresh.embeddings, atol=2e-3)


def test_scene_that_keeps_changing_is_refused_and_no_index_is_written(tiny_model, scene):
    flip = {"n": 0}

    def change_always(done, total):
        flip["n"] += 1
        _replace_scene(scene, OTHER if flip["n"] % 2 else LAYOUT)

    with pytest.raises(RasterInputError, match="changed while it was being indexed"):
        load_or_build_index(scene, tiny_model, T32, progress=change_always)
    assert not sidecar_path(scene).exists()


# ---- 12: a sidecar with damaged data pages (valid footer) -----------------------------------------------------
def _damage_data_pages(path):
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    raw = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for rg in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(rg).column(c)
            start = col.dictionary_page_offset or col.data_page_offset
            end = start + col.total_compressed_size
            raw[start + 8:end] = rng.integers(0, 256, end - start - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))
    read_index_meta(path)  # the footer is still valid


def test_sidecar_with_damaged_data_pages_is_rebuilt(tiny_model, scene, caplog):
    load_or_build_index(scene, tiny_model, T32)
    side = sidecar_path(scene)
    _damage_data_pages(side)
    with pytest.raises(IndexFileError, match="damaged"):
        read_index(side)
    with caplog.at_level(logging.WARNING):
        index = load_or_build_index(scene, tiny_model, T32)
    assert "damaged" in caplog.text and len(index) == 6
    assert len(read_index(side)) == 6  # rewritten, readable again


def test_heatmap_reuse_with_damaged_sidecar_rebuilds(tiny_model, scene, caplog):
    from rsclip_geo.embeddings.reuse import scale_embeddings
    from rsclip_geo.raster.scene import Scene

    load_or_build_index(scene, tiny_model, T32)
    _damage_data_pages(sidecar_path(scene))
    with Scene(scene) as sc, caplog.at_level(logging.WARNING):
        (emb,) = scale_embeddings(sc, T32, tiny_model)
    assert not emb.reused and len(emb.tiles) == 6 and "damaged" in caplog.text
    assert len(read_index(sidecar_path(scene))) == 6


# ---- 11: the index cannot be saved (disk full); a real output cannot be written ------------------------------
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_search_works_when_the_sidecar_cannot_be_saved(tiny_model, scene, monkeypatch):
    import pyarrow.parquet as pq

    from rsclip_geo.embeddings.index import IndexNotSavedWarning
    from rsclip_geo.tasks.search import search

    monkeypatch.setattr(pq, "write_table", _enospc)
    with pytest.warns(IndexNotSavedWarning, match="No space left"):
        hits = search(scene, "red", model=tiny_model, scales=T32, top=3)
    assert len(hits) == 3
    assert not sidecar_path(scene).exists()
    assert not [p for p in scene.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def _frame():
    import geopandas as gpd
    from shapely.geometry import box

    return gpd.GeoDataFrame({"label": ["water", "forest"], "score": [0.9, 0.8]},
                            geometry=[box(0, 0, 10, 10), box(10, 0, 20, 10)], crs="EPSG:32633")


def _half_write_then_fail(kind):
    def fail(*args, **kwargs):
        target = next(a for a in args if isinstance(a, (str, os.PathLike)))
        with open(target, "wb") as f:  # some bytes reached the disk before it filled up
            f.write(b"partial" * 100)
        if kind == "oserror":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        from pyogrio.errors import DataSourceError
        raise DataSourceError(f"Failed to write features to {target}: No space left on device")
    return fail


@pytest.mark.parametrize("ext,kind", [(".gpkg", "oserror"), (".gpkg", "driver"), (".geojson", "driver"),
                                      (".parquet", "oserror")])
def test_disk_full_while_writing_a_vector_is_a_clear_output_error(tmp_path, monkeypatch, ext, kind):
    import pyarrow.parquet as pq
    import pyogrio.geopandas

    from rsclip_geo.outputs.writers import write_vector

    if ext == ".parquet":
        monkeypatch.setattr(pq, "write_table", _half_write_then_fail(kind))
    else:
        monkeypatch.setattr(pyogrio.geopandas, "write", _half_write_then_fail(kind))
    out = tmp_path / f"labels{ext}"
    with pytest.raises(OutputError, match="disk is full") as info:
        write_vector(_frame(), out)
    assert str(out) in str(info.value) and "nothing was written" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_disk_full_while_writing_a_raster_is_a_clear_output_error(tmp_path, monkeypatch):
    import rasterio.shutil
    from affine import Affine

    from rsclip_geo.outputs.writers import write_float_raster

    monkeypatch.setattr(rasterio.shutil, "copy", _half_write_then_fail("oserror"))
    out = tmp_path / "heat.tif"
    with pytest.raises(OutputError, match="disk is full"):
        write_float_raster(out, np.zeros((4, 4), np.float32), Affine(10, 0, 5e5, 0, -10, 5e6), "EPSG:32633")
    assert list(tmp_path.iterdir()) == []


def test_cli_disk_full_gives_one_error_line_and_no_traceback(tiny_bundle, scene, tmp_path, monkeypatch):
    import pyogrio.geopandas
    from click.testing import CliRunner

    from rsclip_geo.cli import main

    monkeypatch.setattr(pyogrio.geopandas, "write", _half_write_then_fail("driver"))
    out = tmp_path / "labels.gpkg"
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "red,green,blue", "-o", str(out),
                                       "--model", str(tiny_bundle), "--tile-size", "32", "-q"])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "disk is full" in result.output and "Traceback" not in result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ---- 13: more classes than a uint8 class raster holds, with --raster: refused before any work ----------------
@pytest.mark.parametrize("n_labels,min_score", [(255, "0"), (254, "0.5")])
def test_too_many_labels_for_the_class_raster_are_refused_before_any_work(tiny_bundle, scene, tmp_path, n_labels,
                                                                        min_score, monkeypatch):
    from click.testing import CliRunner

    import rsclip_geo.cli.tile_classify as cli_tc
    from rsclip_geo.cli import main

    ran = []
    monkeypatch.setattr(cli_tc, "tile_classify", lambda *a, **k: ran.append(1))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(n_labels)), encoding="utf-8")
    out, raster = tmp_path / "labels.gpkg", tmp_path / "classes.tif"
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels-file", str(labels), "-o", str(out),
                                       "--raster", str(raster), "--min-score", min_score,
                                       "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 1 and "255 classes" in result.output and "classes.tif" in result.output
    assert ran == [] and not out.exists() and not raster.exists()


def test_254_labels_fit_the_class_raster(tmp_path):
    from affine import Affine

    from rsclip_geo.outputs.writers import write_class_raster

    names = [f"c{i}" for i in range(254)]
    out = write_class_raster(tmp_path / "c.tif", np.arange(254, dtype=np.uint8).reshape(2, 127),
                             Affine(10, 0, 5e5, 0, -10, 5e6), "EPSG:32633", names)
    import rasterio
    with rasterio.open(out) as ds:
        assert ds.read(1).max() == 253 and ds.nodata == 255


# ---- 16: a writer killed in the write phase leaves a temporary file: the next write removes it -----------------
KILLED_WRITER = """
import sys, time
from pathlib import Path
from rsclip_geo.outputs.writers import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    Path(tmp).write_bytes(b"half a GeoPackage")
    print(tmp.name, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path, sig):
    import signal
    import subprocess
    import sys

    from rsclip_geo.outputs.writers import write_vector

    out = tmp_path / "labels.gpkg"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    proc.send_signal(getattr(signal, sig))
    proc.wait(timeout=30)
    left = tmp_path / name
    assert left.is_file() and ".rsclip-tmp-" in name and name.startswith(".labels.gpkg.")  # ours, recognisably
    foreign = tmp_path / ".labels.gpkg.swp"  # someone else's hidden file: never touched
    foreign.write_bytes(b"x")
    alive = tmp_path / left.name.replace(f"-{proc.pid}-", f"-{os.getpid()}-")  # a writer still running (us)
    alive.write_bytes(b"x")
    write_vector(_frame(), out)
    assert out.is_file() and not left.exists()
    assert foreign.exists() and alive.exists()


def test_old_temp_file_of_another_host_is_removed(tmp_path):
    from rsclip_geo.outputs.writers import STALE_TEMP_S, clean_stale_temp

    out = tmp_path / "hits.parquet"
    old = tmp_path / ".hits.parquet.rsclip-tmp-0badf00d-12345-abcd1234.parquet"
    new = tmp_path / ".hits.parquet.rsclip-tmp-0badf00d-12346-abcd1234.parquet"
    for p in (old, new):
        p.write_bytes(b"x")
    os.utime(old, (0, old.stat().st_mtime - STALE_TEMP_S - 60))
    assert clean_stale_temp(out) == [old]
    assert new.exists()


# ---- 17: hostile labels files -----------------------------------------------------------------------------------
def test_labels_file_with_utf8_bom(tmp_path):
    from rsclip_geo.runtime.prompts import read_labels_file, read_templates_file

    p = tmp_path / "labels.txt"
    p.write_bytes("\ufeffwater\nforest: dense trees | a forest\n".encode("utf-8"))
    labels = read_labels_file(p)
    assert [lab.name for lab in labels] == ["water", "forest"]
    t = tmp_path / "templates.txt"
    t.write_bytes("\ufeffa photo of {}.\n".encode("utf-8"))
    assert read_templates_file(t) == ["a photo of {}."]


def test_labels_file_with_nul_bytes_is_refused(tmp_path):
    from rsclip_geo.errors import LabelError
    from rsclip_geo.runtime.prompts import read_labels_file

    p = tmp_path / "labels.txt"
    p.write_bytes("water\nfor\0est\n".encode("utf-16"))  # UTF-16, as some editors save: NUL in every character
    with pytest.raises(LabelError, match="NUL bytes") as info:
        read_labels_file(p)
    assert str(p) in str(info.value)


def test_huge_labels_file_and_dev_zero_are_refused_without_reading_them_whole(tmp_path):
    from rsclip_geo.errors import LabelError
    from rsclip_geo.runtime.prompts import MAX_LABELS, read_labels_file

    if os.path.exists("/dev/zero"):
        with pytest.raises(LabelError, match="larger than 1 MiB"):
            read_labels_file("/dev/zero")  # before: read until memory ran out
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"c{i}" for i in range(MAX_LABELS + 1)), encoding="utf-8")
    with pytest.raises(LabelError, match="more than 10,000 labels"):
        read_labels_file(many)
    big = tmp_path / "big.txt"
    big.write_text("a" * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(LabelError, match="larger than 1 MiB"):
        read_labels_file(big)


# ---- 18: a searched folder may hold other Parquet files (hits saved beside the indexes) --------------------------
def test_folder_search_skips_parquet_files_that_are_not_indexes(tiny_model, scene, tmp_path):
    from rsclip_geo.tasks.search import search

    folder = tmp_path / "indexes"
    folder.mkdir()
    write_index(build_index(scene, tiny_model, T32), folder / "scene.rsclip-index.parquet")
    first = search(folder, "red", model=tiny_model, top=2).frame
    first.to_parquet(folder / "hits.parquet")  # the previous answer, saved where the indexes are
    hits = search(folder, "red", model=tiny_model, top=2).frame
    assert list(hits["row"]) == list(first["row"]) and list(hits["col"]) == list(first["col"])


def test_folder_of_parquet_files_none_an_index_is_a_clear_error(tiny_model, tmp_path):
    from rsclip_geo.tasks.search import search

    _frame().to_parquet(tmp_path / "hits.parquet")
    with pytest.raises(RasterInputError, match="none an index: hits.parquet"):
        search(tmp_path, "red", model=tiny_model)


# ---- 20: API misuse: clear errors, nothing silently accepted ----------------------------------------------------
def test_api_misuse_gives_clear_errors(tiny_model, scene):
    import rsclip_geo
    from rsclip_geo.errors import LabelError

    def classify(**kw):
        args = dict(scene=scene, labels=["red", "green"], model=tiny_model, tile=TileSpec(size_px=32))
        args.update(kw)
        return rsclip_geo.tile_classify(args.pop("scene"), args.pop("labels"), **args)

    with pytest.raises(TypeError, match=r"tile must be a rsclip_geo.TileSpec, e.g. TileSpec\(size_px=256\)"):
        classify(tile=256)
    with pytest.raises(TypeError, match="scales must be a rsclip_geo.TileSpec"):
        rsclip_geo.build_index(scene, tiny_model, scales=[32])
    with pytest.raises(ValueError, match="nothing to search"):
        rsclip_geo.search([], "red", model=tiny_model)
    with pytest.raises(LabelError, match="not bytes"):
        classify(labels=b"red,green")
    with pytest.raises(LabelError, match="label 2 is NoneType"):
        classify(labels=["red", None])
    with pytest.raises(TypeError, match="raster file path.*got ndarray; write an in-memory array to a GeoTIFF"):
        classify(scene=np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(TypeError, match="raster file path"):
        rsclip_geo.build_index(np.zeros((3, 64, 64), np.uint8), tiny_model)
    with pytest.raises(LabelError, match="has no '{}'"):
        classify(templates=["a satellite photo"])
    with pytest.raises(LabelError, match="not one string"):
        classify(templates="a photo of {}")
    with pytest.raises(ValueError, match="zero_invalid must be 'auto', True or False, got 'maybe'"):
        classify(zero_invalid="maybe")
    for bad in (-1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="max_invalid is the largest fraction"):
            classify(max_invalid=bad)
        with pytest.raises(ValueError, match="max_invalid is the largest fraction"):
            rsclip_geo.search(scene, "red", model=tiny_model, max_invalid=bad)
    with pytest.raises(RasterInputError, match="band numbers are whole numbers 1..3, got 1.5"):
        classify(bands=[1.5, 2, 3])
    assert not sidecar_path(scene).exists()  # none of these indexed anything
    # what is right still works: whole-number floats as bands, templates with '{}'
    ok = classify(bands=[1.0, 2, 3], templates=["a photo of {}."])
    assert len(ok) == 6


# ---- 21: tiles of a few pixels (a tile size in metres far below the pixel size) -------------------------------
def test_tiles_below_a_few_pixels_are_refused_naming_the_pixel_size(tiny_bundle, scene, tmp_path):
    from affine import Affine
    from click.testing import CliRunner

    from rsclip_geo.cli import main
    from rsclip_geo.raster.tiling import plan_tiles

    out = tmp_path / "labels.gpkg"
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "red,green", "-o", str(out),
                                       "--tile-size-m", "0.0001", "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 1 and not out.exists()
    assert "1x1 px" in result.output and "pixel size of 10 x 10 m" in result.output and "at least 80 m" in result.output
    utm = Affine(10, 0, 5e5, 0, -10, 5e6)
    with pytest.raises(RasterInputError, match="7x7 px"):
        plan_tiles(500, 500, utm, "EPSG:32633", TileSpec(size_m=70), 16, source="s.tif")
    assert plan_tiles(500, 500, utm, "EPSG:32633", TileSpec(size_m=80), 16).tile_width == 8
    with pytest.raises(RasterInputError, match="tiles of 4 px are too small"):
        plan_tiles(500, 500, utm, "EPSG:32633", TileSpec(size_px=4), 16, source="s.tif")


# ---- 22: one label: the softmax over one class is 1.0 everywhere -------------------------------------------------
def test_single_label_warns_that_probabilities_are_meaningless(tiny_model, tiny_bundle, scene, tmp_path):
    import warnings

    import rsclip_geo
    from click.testing import CliRunner

    from rsclip_geo.tasks.classify import SingleLabelWarning
    from rsclip_geo.cli import main

    with pytest.warns(SingleLabelWarning, match="background/negative label"):
        gdf = rsclip_geo.tile_classify(scene, ["red"], model=tiny_model, tile=TileSpec(size_px=32)).frame
    assert np.allclose(gdf["score"], 1.0)  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingleLabelWarning)
        rsclip_geo.tile_classify(scene, ["red", "green"], model=tiny_model, tile=TileSpec(size_px=32))
    with pytest.warns(SingleLabelWarning, match="probability 1.0"):  # the CLI shows it on stderr
        result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "red", "-o",
                                           str(tmp_path / "l.gpkg"), "--tile-size", "32", "--model",
                                           str(tiny_bundle), "-q"])
    assert result.exit_code == 0


# ---- 23: a symlinked scene: the sidecar goes beside the link the user gave ---------------------------------------
def test_symlinked_scene_gets_its_sidecar_beside_the_link(tiny_model, tmp_path):
    from rsclip_geo.tasks.search import search

    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    target = write_geotiff(data / "scene.tif", colour_blocks(LAYOUT, 32))
    link = work / "mine.tif"
    link.symlink_to(target)
    data.chmod(0o555)  # the target's folder is read-only (shared data); the link's folder is ours
    try:
        hits = search(link, "red", model=tiny_model, scales=T32, top=2)
        side = sidecar_path(link)
        assert side == work / "mine.tif.rsclip-index.parquet" and side.is_file()
        assert sorted(p.name for p in data.iterdir()) == ["scene.tif"]
        meta = read_index_meta(side)
        assert meta["scene"]["path"] == str(target.resolve())  # the key is the file itself
        again = load_or_build_index(link, tiny_model, T32, progress=lambda d, t: pytest.fail("re-encoded"))
        assert len(again) == 6 and len(hits) == 2
    finally:
        data.chmod(0o755)


# ---- 10: previews with non-Latin-1 text; a preview that fails leaves no outputs behind -------------------------
def test_preview_draws_non_latin1_labels_and_queries(tiny_bundle, scene, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from rsclip_geo.cli import main

    base = ["--model", str(tiny_bundle), "--tile-size", "32", "-q"]
    out, png = tmp_path / "labels.gpkg", tmp_path / "labels.png"
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "вода,лес,νερό", "-o",
                                       str(out), "--preview", str(png), *base])
    assert result.exit_code == 0, result.output
    assert out.is_file() and Image.open(png).size[0] >= 512
    hits, png2 = tmp_path / "hits.gpkg", tmp_path / "hits.png"
    result = CliRunner().invoke(main, ["search", str(scene), "красный водоём 湖", "-o", str(hits),
                                       "--preview", str(png2), *base])
    assert result.exit_code == 0, result.output
    assert hits.is_file() and png2.is_file()


def test_unicode_font_is_used_and_the_bitmap_fallback_never_raises():
    from PIL import Image, ImageDraw, ImageFont

    from rsclip_geo.outputs import preview

    font = preview._font(13)
    if any(p.is_file() for p in preview._font_candidates()):
        assert isinstance(font, ImageFont.FreeTypeFont)
        ink = Image.new("L", (80, 20))
        ImageDraw.Draw(ink).text((0, 0), "вода", font=font, fill=255)
        assert np.asarray(ink).max() == 255  # glyphs drawn
    bitmap = ImageFont.load_default() if not hasattr(ImageFont, "load_default_imagefont") else \
        ImageFont.load_default_imagefont()
    img = Image.new("RGB", (200, 40))
    preview._label(ImageDraw.Draw(img), (5, 5), "вода 湖", (255, 0, 0), bitmap)  # replaced by '?', no crash


def test_a_failing_preview_leaves_no_outputs(tiny_bundle, scene, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from rsclip_geo.outputs import preview
    from rsclip_geo.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("preview rendering failed")

    monkeypatch.setattr(preview, "quicklook", broken)
    out, raster, png = tmp_path / "labels.gpkg", tmp_path / "classes.tif", tmp_path / "labels.png"
    result = CliRunner().invoke(main, ["tile-classify", str(scene), "--labels", "red,green", "-o", str(out),
                                       "--raster", str(raster), "--preview", str(png), "--model", str(tiny_bundle),
                                       "--tile-size", "32", "-q"])
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


# ---- 9: strip reads are bounded in bytes, not only in tiles ----------------------------------------------------
def _sparse_scene(path, width, height):
    """A tiled, sparse uint8 GeoTIFF (a few KB on disk whatever its size) with one painted block."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(1, 0, 5e5, 0, -1, 5e6), tiled=True, blockxsize=512,
                       blockysize=512, sparse_ok=True) as dst:
        dst.write(np.full((3, 512, 512), 120, np.uint8), window=Window(0, 0, 512, 512))
    return path


def test_strip_reads_of_a_wide_scene_stay_under_the_byte_bound(tmp_path):
    from rsclip_geo.raster.scene import Scene
    from rsclip_geo.raster.tile_stream import MAX_STRIP_BYTES, read_bytes_per_pixel, strip_windows
    from rsclip_geo.raster.tiling import plan_tiles

    path = _sparse_scene(tmp_path / "wide.tif", 200_000, 4096)
    with Scene(path) as sc:
        plan = plan_tiles(sc.width, sc.height, sc.transform, sc.crs, TileSpec(size_px=4096), 224)
        bpp = read_bytes_per_pixel(sc)
        windows = list(strip_windows(sc, plan))
        assert sum(len(tiles) for _, tiles in windows) == len(plan) == 49
        biggest = max(w.width * w.height * bpp for w, _ in windows)
        assert biggest <= MAX_STRIP_BYTES  # 64 tiles a read planned 64 x 4096^2 px: 16 GB
        plan_1k = plan_tiles(sc.width, sc.height, sc.transform, sc.crs, TileSpec(size_px=1024), 224)
        assert max(w.width * w.height * bpp for w, _ in strip_windows(sc, plan_1k)) <= MAX_STRIP_BYTES
        assert max(len(t) for _, t in strip_windows(sc, plan_1k)) > 1  # still strips, not tile by tile


def test_a_tile_too_large_to_read_is_refused_before_any_work(tmp_path, tiny_model):
    import rsclip_geo

    path = _sparse_scene(tmp_path / "huge.tif", 60_000, 60_000)
    with pytest.raises(RasterInputError, match="GiB of memory to read"):
        rsclip_geo.tile_classify(path, ["a", "b"], model=tiny_model, tile=TileSpec(size_px=60_000))


def test_byte_bounded_strips_give_the_same_tiles(scene, monkeypatch, tiny_model):
    from rsclip_geo.raster import tile_stream
    from rsclip_geo.raster.scene import Scene
    from rsclip_geo.raster.tiling import plan_tiles

    with Scene(scene) as sc:
        plan = plan_tiles(sc.width, sc.height, sc.transform, sc.crs, TileSpec(size_px=32), 16)
        reference = [(t, chw.copy(), valid.copy()) for t, chw, valid in tile_stream._tile_pixels(sc, plan)]
        reads = []
        real = sc.read_chw

        def spy(window):
            reads.append(window)
            return real(window)

        monkeypatch.setattr(sc, "read_chw", spy)
        bpp = getattr(tile_stream, "read_bytes_per_pixel", lambda s: 15)(sc)
        monkeypatch.setattr(tile_stream, "MAX_STRIP_BYTES", 32 * 32 * bpp * 2, raising=False)  # 2 tiles a read at most
        bounded = list(tile_stream._tile_pixels(sc, plan))
    assert [w.width for w in reads] == [64, 32, 64, 32]
    for (t0, c0, v0), (t1, c1, v1) in zip(reference, bounded, strict=True):
        assert t0 == t1 and np.array_equal(c0, c1) and np.array_equal(v0, v1)


# ---- 14: multi-CRS search: a tile across the antimeridian is split there, not 360 degrees wide -----------------
def test_multi_crs_hits_across_the_antimeridian_are_split(tiny_model, tmp_path):
    from affine import Affine
    from pyproj import Geod

    from rsclip_geo.tasks.search import search

    # UTM 60N: x = 714,984 m is 180 degrees at 50 N; 100 m pixels, 32-px (3.2 km) tiles; the first column of
    # tiles straddles the antimeridian. The second scene (UTM 1N) is just east of it.
    zone60 = write_geotiff(tmp_path / "z60.tif", colour_blocks(LAYOUT, 32), crs="EPSG:32660",
                           transform=Affine(100, 0, 713_500, 0, -100, 5_545_000))
    zone1 = write_geotiff(tmp_path / "z01.tif", colour_blocks(LAYOUT, 32), crs="EPSG:32601",
                          transform=Affine(100, 0, 330_000, 0, -100, 5_545_000))
    hits = search([zone60, zone1], "red", model=tiny_model, scales=T32, top=12).frame
    assert hits.crs.to_epsg() == 4326 and len(hits) == 12
    geod = Geod(ellps="WGS84")
    crossing = 0
    for geom in hits.geometry:
        parts = getattr(geom, "geoms", [geom])
        assert all(p.bounds[2] - p.bounds[0] < 0.1 for p in parts)  # ~3.2 km tiles, never 360 degrees wide
        area = sum(abs(geod.geometry_area_perimeter(p)[0]) for p in parts)
        assert area == pytest.approx(3200 * 3200, rel=0.02)
        if len(parts) == 2:
            crossing += 1
            assert {round(p.bounds[0]) for p in parts} | {round(p.bounds[2]) for p in parts} >= {180, -180}
    assert crossing == 2  # the two tiles of the zone-60 scene's first column


# ---- 15: a container of subdatasets and no bands (netCDF/HDF; here a GeoPackage with two raster tables) --------
def test_zero_band_container_names_its_subdatasets(tmp_path, tiny_model):
    import rasterio
    from affine import Affine

    import rsclip_geo
    from rsclip_geo.raster.scene import Scene

    with rasterio.Env() as env:
        if "GPKG" not in env.drivers():
            pytest.skip("GDAL has no GPKG driver")
    path = tmp_path / "two.gpkg"
    for i, name in enumerate(["summer", "winter"]):
        opts = {"RASTER_TABLE": name, **({"APPEND_SUBDATASET": "YES"} if i else {})}
        with rasterio.open(path, "w", driver="GPKG", width=64, height=64, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=Affine(10, 0, 5e5, 0, -10, 5e6), **opts) as dst:
            dst.write(np.full((3, 64, 64), 50 + 100 * i, np.uint8))
    with pytest.raises(RasterInputError, match="container of 2 subdataset") as info:
        Scene(path)
    assert f"GPKG:{path}:summer" in str(info.value) and f"GPKG:{path}:winter" in str(info.value)
    # and the named subdataset is a scene that works
    gdf = rsclip_geo.tile_classify(f"GPKG:{path}:winter", ["a", "b"], model=tiny_model,
                                   tile=TileSpec(size_px=32)).frame
    assert len(gdf) == 4 and gdf.crs is not None


# ---- 19: pixels rewritten in place, size and mtime kept: the index is not reused -------------------------------
def test_in_place_pixel_rewrite_keeping_size_and_mtime_makes_the_index_stale(tiny_model, tmp_path):
    import time

    rng = np.random.default_rng(1)
    big = write_geotiff(tmp_path / "big.tif", rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8))
    assert big.stat().st_size > 3 * 2**20  # uncompressed: the middle MiB is in neither hashed MiB
    first = load_or_build_index(big, tiny_model, [TileSpec(size_px=256)])
    st = big.stat()
    time.sleep(0.05)
    with open(big, "r+b") as f:  # a tool that edits pixels in place and restores the timestamp (touch -r)
        f.seek(st.st_size // 2)
        f.write(bytes(1 << 17))  # 128 KiB of zeros, between the hashed first and last MiB
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert big.stat().st_size == st.st_size and big.stat().st_mtime_ns == st.st_mtime_ns
    encoded = []
    again = load_or_build_index(big, tiny_model, [TileSpec(size_px=256)], progress=lambda d, t: encoded.append(d))
    assert encoded  # rebuilt, not reused
    fresh = build_index(big, tiny_model, [TileSpec(size_px=256)])
    np.testing.assert_allclose(again.embeddings, fresh.embeddings, atol=1e-6)  # the new pixels
    assert not np.allclose(fresh.embeddings, first.embeddings, atol=1e-4)
