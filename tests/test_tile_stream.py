"""Tile stream (masking, fill, batching, reader thread) and tile_classify end to end with the tiny real ONNX model."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import box

import rsclip_geo.raster.scene as scene_module
from rsclip_geo.runtime.bundle import ImageSpec
from rsclip_geo.tasks.classify import tile_classify
from rsclip_geo.errors import RasterInputError
from rsclip_geo.raster.scene import NotGeoreferencedSceneWarning, Scene
from rsclip_geo.raster.tile_stream import StreamStats, stream_tiles
from rsclip_geo.raster.tiling import TileSpec, plan_tiles
from rsclip_geo.runtime.preprocess import Preprocessor
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, truncate_file, write_geotiff

# identity preprocessing (no resize, mean 0, std 1): pixels * 255 gives back the tile's RGB
IDENTITY8 = Preprocessor(ImageSpec(size=8, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="nearest"))
A = (200, 100, 50)
C1, C2 = (200, 10, 20), (10, 100, 50)  # mean (105, 55, 35)


def _masked_scene(tmp_path):
    """32 x 24 px, nodata 0, 8 px tiles (4 cols x 3 rows) with known invalid parts."""
    data = np.zeros((3, 24, 32), np.uint8)
    data[:] = np.array((60, 120, 180), np.uint8)[:, None, None]
    data[:, 0:8, 4:8] = 0                                  # tile (0,0): right half nodata, left half A
    data[:, 0:8, 0:4] = np.array(A, np.uint8)[:, None, None]
    data[:, 0:8, 8:10] = np.array(C1, np.uint8)[:, None, None]  # tile (0,1): 1/4 C1, 1/4 C2, 1/2 nodata
    data[:, 0:8, 10:12] = np.array(C2, np.uint8)[:, None, None]
    data[:, 0:8, 12:16] = 0
    data[:, 0:8, 16:24] = 0                                # tile (0,2): all nodata
    data[:, 8:16, 10:16] = 0                               # tile (1,1): 3/4 nodata
    data[:, 16:19, 24:32] = 0                              # tile (2,3): 3 of 8 rows nodata
    return write_geotiff(tmp_path / "masked.tif", data, nodata=0)


def _run(scene, plan, batch_size=3, max_invalid=0.5, prefetch=2):
    stats = StreamStats()
    batches = list(stream_tiles(scene, plan, IDENTITY8, batch_size=batch_size, max_invalid=max_invalid,
                                prefetch=prefetch, stats=stats))
    return batches, stats


def test_skipping_fractions_fill_batches_and_order(tmp_path):
    with Scene(_masked_scene(tmp_path)) as scene:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, TileSpec(size_px=8), 8)
        batches, stats = _run(scene, plan)
    assert (stats.total, stats.skipped, stats.encoded) == (12, 2, 10)
    assert stats.skipped_tiles == [(0, 2), (1, 1)]
    assert [len(b.tiles) for b in batches] == [3, 3, 3, 1]  # full except the last
    assert sum(b.n_seen for b in batches) == 12
    order = [(t.row, t.col) for b in batches for t in b.tiles]
    expected_order = [(r, c) for r in range(3) for c in range(4) if (r, c) not in {(0, 2), (1, 1)}]
    assert order == expected_order  # row-major
    frac = {(t.row, t.col): float(f) for b in batches for t, f in zip(b.tiles, b.valid_fraction)}
    assert frac[(0, 0)] == 0.5 and frac[(0, 1)] == 0.5 and frac[(2, 3)] == 40 / 64 and frac[(1, 0)] == 1.0
    pixels = {(t.row, t.col): np.rint(p * 255).astype(int).transpose(1, 2, 0)
              for b in batches for t, p in zip(b.tiles, b.pixels)}
    for b in batches:
        assert b.pixels.dtype == np.float32 and b.pixels.shape == (len(b.tiles), 3, 8, 8)
    # half-nodata tile: the invalid half takes the valid colour, not black
    assert (pixels[(0, 0)] == A).all()
    # two colours + nodata: invalid half = mean valid colour (200+10)/2, (10+100)/2, (20+50)/2
    assert (pixels[(0, 1)][:, 0:2] == C1).all() and (pixels[(0, 1)][:, 2:4] == C2).all()
    assert (pixels[(0, 1)][:, 4:8] == (105, 55, 35)).all()
    assert (pixels[(2, 3)] == (60, 120, 180)).all()


def test_a_batch_size_beyond_the_scene_allocates_only_the_scene(tmp_path):
    """--batch-size 999999999 once asked numpy for 2.8 TiB before reading a tile; the buffer stops at the plan."""
    with Scene(_masked_scene(tmp_path)) as scene:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, TileSpec(size_px=8), 8)
        batches, stats = _run(scene, plan, batch_size=999_999_999)
    assert [len(b.tiles) for b in batches] == [10] and batches[0].pixels.shape == (10, 3, 8, 8)
    assert (stats.total, stats.encoded) == (12, 10)


def test_max_invalid_threshold(tmp_path):
    with Scene(_masked_scene(tmp_path)) as scene:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, TileSpec(size_px=8), 8)
        _, strict = _run(scene, plan, max_invalid=0.0)   # only complete tiles
        _, loose = _run(scene, plan, max_invalid=1.0)    # everything with any valid pixel
    assert strict.skipped_tiles == [(0, 0), (0, 1), (0, 2), (1, 1), (2, 3)]
    assert loose.skipped_tiles == [(0, 2)]  # an all-nodata tile is never encoded


def test_pad_tiles_count_outside_pixels_as_invalid(tmp_path):
    data = colour_blocks([[RED, GREEN]], 10)  # 20 x 10 px; tiles of 8: last column 4 px wide, last row 2 px
    with Scene(write_geotiff(tmp_path / "pad.tif", data)) as scene:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, TileSpec(size_px=8, edge="pad"), 8)
        batches, stats = _run(scene, plan, batch_size=16, max_invalid=0.9)
    assert (plan.n_rows, plan.n_cols) == (2, 3)
    frac = {(t.row, t.col): float(f) for b in batches for t, f in zip(b.tiles, b.valid_fraction)}
    assert frac == {(0, 0): 1.0, (0, 1): 1.0, (0, 2): 0.5, (1, 0): 0.25, (1, 1): 0.25, (1, 2): 0.125}
    pixels = {(t.row, t.col): np.rint(p * 255).astype(int).transpose(1, 2, 0)
              for b in batches for t, p in zip(b.tiles, b.pixels)}
    assert (pixels[(0, 2)] == GREEN).all()  # the padding takes the tile's colour


def test_reader_thread_error_reaches_consumer(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    p = write_geotiff(tmp_path / "cut.tif", rng.integers(1, 255, (3, 256, 256), dtype=np.uint8), tiled=True,
                      blockxsize=16, blockysize=16, compress="deflate")
    truncate_file(p, -200)  # damages only the last block (bottom-right); the file still opens
    # a 4 x 4 scene sample reads blocks around pixels 32, 96, 160, 224 only: the scene opens fine
    monkeypatch.setattr(scene_module, "SAMPLE_MAX_SIDE", 4)
    got = []
    with Scene(p) as scene:
        plan = plan_tiles(256, 256, scene.transform, scene.crs, TileSpec(size_px=16), 16)
        pre = Preprocessor(ImageSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3))
        # tiles of a row are read as one strip, so the error names the last row's strip
        with pytest.raises(RasterInputError, match=r"cut\.tif: cannot read window col 0 row 240 \(256x16\)"):
            for batch in stream_tiles(scene, plan, pre, batch_size=32):
                got.extend(batch.tiles)
    assert len(got) == 224  # the 7 full batches before the broken tile came through
    assert not any(t.name == "rsclip-tile-reader" and t.is_alive() for t in threading.enumerate())


def test_closing_the_stream_early_stops_the_reader_promptly(tmp_path):
    with Scene(write_geotiff(tmp_path / "s.tif", np.full((3, 32, 32), 100, np.uint8))) as scene:
        plan = plan_tiles(32, 32, scene.transform, scene.crs, TileSpec(size_px=8), 8)  # 16 tiles = 2 batches of 8
        stream = stream_tiles(scene, plan, IDENTITY8, batch_size=8, prefetch=1)
        first = next(stream)
        assert len(first.tiles) == 8
        time.sleep(0.3)  # the reader has queued batch 2 and waits to hand over the end marker
        start = time.perf_counter()
        stream.close()
        assert time.perf_counter() - start < 1.0
    time.sleep(0.2)
    assert not any(t.name == "rsclip-tile-reader" and t.is_alive() for t in threading.enumerate())


# ---- tile_classify end to end (tiny real ONNX model: embedding = mean normalised RGB) -------------------------------
def tiny_probs(colour, logit_scale=10.0):
    """What the tiny model must output for a uniform tile: softmax(10 * cos(normalised RGB, axis))."""
    x = (np.asarray(colour, float) / 255.0 - 0.5) / 0.5
    logits = logit_scale * x / np.linalg.norm(x)
    e = np.exp(logits - logits.max())
    return e / e.sum()


UTM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
NAMES = {RED: "red", GREEN: "green", BLUE: "blue"}


def test_classify_colour_blocks(tmp_path, tiny_model):
    layout = [[RED, GREEN, BLUE], [BLUE, RED, GREEN]]
    p = write_geotiff(tmp_path / "blocks.tif", colour_blocks(layout, 16), crs="EPSG:32633", transform=UTM)
    result = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16), top_k=3)
    gdf = result.frame
    assert len(result) == len(gdf) == 6 and gdf.crs == CRS.from_epsg(32633)
    assert list(zip(gdf["row"], gdf["col"])) == [(r, c) for r in range(2) for c in range(3)]
    labels = ["red", "green", "blue"]
    for _, rec in gdf.iterrows():
        colour = layout[rec["row"]][rec["col"]]
        assert rec["label"] == rec["label_1"] == NAMES[colour]
        p_exp = tiny_probs(colour)
        order = np.argsort(-p_exp)
        assert [rec["label_1"], rec["label_2"], rec["label_3"]] == [labels[i] for i in order]
        assert [rec["score_1"], rec["score_2"], rec["score_3"]] == pytest.approx(p_exp[order], abs=1e-5)
        assert rec["score_1"] >= rec["score_2"] >= rec["score_3"] and rec["score"] == rec["score_1"]
        assert rec["valid_frac"] == 1.0
        x0, y1 = 500000.0 + 160.0 * rec["col"], 5000000.0 - 160.0 * rec["row"]
        assert list(rec.geometry.exterior.coords)[:4] == [(x0, y1), (x0 + 160, y1), (x0 + 160, y1 - 160),
                                                         (x0, y1 - 160)]
    s = result.summary
    assert (s.tiles_total, s.tiles_encoded, s.tiles_skipped) == (6, 6, 0)
    assert (s.tile_width_px, s.tile_height_px) == (16, 16)
    assert result.plan.grid_transform == Affine(160.0, 0.0, 500000.0, 0.0, -160.0, 5000000.0)
    # the typed fields: labels in the order given, the class grid holds each tile's label index
    assert result.labels == result.class_names == labels
    assert result.class_grid().tolist() == [[labels.index(NAMES[c]) for c in row] for row in layout]
    assert result.label_counts() == {"red": 2, "green": 2, "blue": 2}


def test_classify_top_k_and_min_score(tmp_path, tiny_model):
    yellow = (200, 190, 40)  # between red and green: no confident label
    p = write_geotiff(tmp_path / "y.tif", colour_blocks([[RED, yellow]], 16), transform=UTM)
    p_yellow = tiny_probs(yellow)
    assert 0.4 < p_yellow.max() < 0.7
    result = tile_classify(p, ["red", "green", "blue"], model=tiny_model, tile=TileSpec(size_px=16), top_k=2,
                           min_score=0.75)
    gdf = result.frame
    assert result.class_names == ["red", "green", "blue", "unknown"]  # min_score > 0 can give 'unknown'
    assert result.class_grid().tolist() == [[0, 3]] and result.label_counts() == {"red": 1, "unknown": 1}
    assert [c for c in gdf.columns if c.startswith(("label_", "score_"))] == ["label_1", "score_1", "label_2",
                                                                             "score_2"]
    assert list(gdf["label"]) == ["red", "unknown"]
    assert list(gdf["label_1"]) == ["red", "red"]  # top-k keeps the best guess even when unknown
    assert gdf["score"].tolist() == pytest.approx([tiny_probs(RED).max(), p_yellow.max()], abs=1e-5)
    assert gdf["label_2"].iloc[1] == "green"
    gdf = tile_classify(p, ["red", "green", "blue"], model=tiny_model, tile=TileSpec(size_px=16), top_k=9).frame
    assert "label_3" in gdf.columns and "label_4" not in gdf.columns  # top_k capped at the label count
    assert list(gdf["label"]) == ["red", "red"]


def test_classify_skips_nodata_tiles(tmp_path, tiny_model):
    data = colour_blocks([[RED, GREEN, BLUE], [BLUE, RED, GREEN]], 16)
    data[:, 16:32, 0:16] = 0
    p = write_geotiff(tmp_path / "nd.tif", data, transform=UTM, nodata=0)
    result = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16))
    gdf, s = result.frame, result.summary
    assert (s.tiles_total, s.tiles_encoded, s.tiles_skipped) == (6, 5, 1)
    assert result.class_grid()[1, 0] == 255 and result.class_grid()[0].tolist() == [0, 1, 2]  # skipped: nodata
    assert (1, 0) not in set(zip(gdf["row"], gdf["col"]))
    assert list(gdf["label"]) == ["red", "green", "blue", "red", "green"]


def test_classify_partial_edge_tiles(tmp_path, tiny_model):
    data = colour_blocks([[RED, GREEN, BLUE]], 16)[:, :, :40]  # 40 x 16: last tile half outside
    p = write_geotiff(tmp_path / "edge.tif", data, transform=UTM)
    gdf = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16, edge="pad")).frame
    assert list(gdf["label"]) == ["red", "green", "blue"]
    assert gdf["valid_frac"].tolist() == [1.0, 1.0, 0.5]
    assert gdf.geometry.iloc[2].equals(box(500320.0, 4999840.0, 500400.0, 5000000.0))  # clipped to the scene
    gdf = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16, edge="drop")).frame
    assert list(gdf["label"]) == ["red", "green"]
    gdf = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16, edge="shift")).frame
    assert gdf.geometry.iloc[2].equals(box(500240.0, 4999840.0, 500400.0, 5000000.0))
    half_half = tuple((np.add(GREEN, BLUE) / 2).tolist())  # the shifted tile: 8 px green + 8 px blue
    assert gdf["score"].iloc[2] == pytest.approx(tiny_probs(half_half).max(), abs=1e-5)
    assert gdf["label"].iloc[2] == ["red", "green", "blue"][int(np.argmax(tiny_probs(half_half)))]
    with pytest.raises(RasterInputError, match=r"edge\.tif.*40x16 px, smaller than one tile \(32x32 px\)"):
        tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=32))


def test_classify_without_crs(tmp_path, tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        p = write_geotiff(tmp_path / "plain.tif", colour_blocks([[GREEN, RED]], 16), crs=None,
                          transform=Affine.identity())
    with pytest.warns(NotGeoreferencedSceneWarning):
        gdf = tile_classify(p, "red,green,blue", model=tiny_model, tile=TileSpec(size_px=16)).frame
    assert gdf.crs is None
    assert list(gdf["label"]) == ["green", "red"]
    assert gdf.geometry.iloc[1].equals(box(16, 0, 32, 16))


@pytest.mark.parametrize("dtype,tile_px", [("uint8", 16), ("uint8", 10), ("uint16", 16), ("uint16", 10)])
def test_stream_pixels_equal_per_tile_reference(tmp_path, dtype, tile_px):
    """The band-first fast path gives exactly what reading each tile as HxWx3 RGB and preprocessing it gives:
    8-bit (identity stretch) and 16-bit (percentile stretch), tiles at the model size and resized (10 -> 16 px),
    nodata holes and padded edge tiles."""
    rng = np.random.default_rng(3)
    hi = 255 if dtype == "uint8" else 4000
    data = rng.integers(1, hi, (3, 37, 45)).astype(dtype)
    data[:, 5:12, 7:20] = 0        # a nodata hole
    path = write_geotiff(tmp_path / f"s_{dtype}.tif", data, nodata=0)
    spec = ImageSpec(size=16, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28), interpolation="bicubic")
    pre = Preprocessor(spec)
    with Scene(path) as scene:
        plan = plan_tiles(scene.width, scene.height, scene.transform, scene.crs, TileSpec(size_px=tile_px), 16)
        got = {(t.row, t.col): p for b in stream_tiles(scene, plan, pre, batch_size=4, max_invalid=0.9)
               for t, p in zip(b.tiles, b.pixels)}
        want = {}
        for tile in plan:
            rgb, valid = scene.read_rgb(tile.window)
            if valid.mean() <= 0 or 1 - valid.mean() > 0.9:
                continue
            if not valid.all():
                rgb = rgb.copy()
                rgb[~valid] = rgb[valid].mean(axis=0).round().astype(np.uint8)
            want[(tile.row, tile.col)] = pre([rgb])[0]
    assert len(want) >= 6 and sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=str(key))
