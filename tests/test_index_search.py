"""Embedding index (GeoParquet, freshness key) and text search over one or many scenes."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.errors import LabelError, OutputError, RasterInputError
from rsclip_geo.errors import IndexFileError
from rsclip_geo.embeddings.index import (build_index, load_or_build_index, read_index, read_index_meta,
                              sidecar_path, write_index)
from rsclip_geo.tasks.search import search, similarity_grid
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

LAYOUT = [[RED, GREEN, BLUE], [BLUE, RED, GREEN]]
T32 = [TileSpec(size_px=32)]


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "scene.tif", colour_blocks(LAYOUT, 32))


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, done, total):
        self.calls += 1


def test_index_round_trip(tiny_model, scene, tmp_path):
    index = build_index(scene, tiny_model, [TileSpec(size_px=32), TileSpec(size_px=64)])
    assert len(index) == 6 + 2  # 2x3 tiles of 32 px, 1x2 tiles of 64 px (pad: ceil((96-64)/64)+1 = 2)
    path = write_index(index, tmp_path / "i.parquet")
    back = read_index(path)
    assert back.frame.crs.to_epsg() == 32633
    assert list(back.frame["row"]) == list(index.frame["row"]) and list(back.frame["scale"]) == [0] * 6 + [1] * 2
    assert back.frame.geometry.geom_equals_exact(index.frame.geometry, tolerance=0).all()
    cos = (back.embeddings * index.embeddings).sum(axis=1)
    assert cos.min() > 0.999  # float16 storage
    meta = read_index_meta(path)
    assert meta["model"]["name"] == "tiny-rgb" and len(meta["model"]["fingerprint"]) == 64
    assert meta["scene"]["size"] == scene.stat().st_size and meta["embedding_dtype"] == "float16"
    assert [p["tile_width"] for p in meta["plans"]] == [32, 64]
    import pyarrow.parquet as pq
    assert b"geo" in pq.read_schema(path).metadata  # a real GeoParquet file
    f32 = read_index(write_index(index, tmp_path / "f32.parquet", dtype="float32"))
    np.testing.assert_allclose(f32.embeddings, index.embeddings, atol=1e-6)


def test_sidecar_reused_then_rebuilt_when_stale(tiny_model, scene, tiny_bundle, tmp_path):
    first = Counter()
    load_or_build_index(scene, tiny_model, T32, progress=first)
    side = sidecar_path(scene)
    assert side.is_file() and side.name == "scene.tif.rsclip-index.parquet" and first.calls > 0
    again = Counter()
    load_or_build_index(scene, tiny_model, T32, progress=again)
    assert again.calls == 0  # reused: nothing encoded
    other_tiling = Counter()
    load_or_build_index(scene, tiny_model, [TileSpec(size_px=48)], progress=other_tiling)
    assert other_tiling.calls > 0
    # another model (same architecture, other weights) -> rebuilt
    other = tmp_path / "other_bundle"
    shutil.copytree(tiny_bundle, other)
    meta = json.loads((other / "model.json").read_text())
    meta["logit_scale"] = 20.0
    (other / "model.json").write_text(json.dumps(meta))
    rebuilt = Counter()
    load_or_build_index(scene, rsclip_geo.load_model(other, device="cpu"), [TileSpec(size_px=48)], progress=rebuilt)
    assert rebuilt.calls > 0
    # the scene changes -> rebuilt, and the new index sees the new pixels
    write_geotiff(scene, colour_blocks([[BLUE, BLUE, BLUE], [BLUE, BLUE, BLUE]], 32))
    changed = Counter()
    index = load_or_build_index(scene, tiny_model, T32, progress=changed)
    assert changed.calls > 0
    blue = tiny_model.class_embeddings(["blue"])[0]
    assert ((index.embeddings @ blue) > 0.5).all()  # all six tiles now blue (two were before)


def test_explicit_stale_index_path_is_not_overwritten(tiny_model, scene, tmp_path):
    path = tmp_path / "mine.parquet"
    load_or_build_index(scene, tiny_model, T32, index_path=path)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="cannot be reused"):
        load_or_build_index(scene, tiny_model, [TileSpec(size_px=48)], index_path=path)
    assert path.read_bytes() == before


def test_read_only_folder_uses_cache(tiny_model, tmp_path, monkeypatch):
    """A read-only scene folder (r-x, as shared/data is; root included) gets its index in the cache."""
    monkeypatch.setenv("RSCLIP_GEO_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "ro"
    folder.mkdir()
    scene = write_geotiff(folder / "scene.tif", colour_blocks(LAYOUT, 32))
    folder.chmod(0o555)
    try:
        path = sidecar_path(scene)
        assert path.parent == tmp_path / "cache" / "indexes"
        load_or_build_index(scene, tiny_model, T32)
        assert path.is_file() and not (folder / "scene.tif.rsclip-index.parquet").exists()
    finally:
        folder.chmod(0o755)


def test_not_an_index(tmp_path, tiny_model):
    import geopandas as gpd
    import shapely

    plain = tmp_path / "plain.parquet"
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_parquet(plain)
    with pytest.raises(IndexFileError, match="not an rsclip-geo index"):
        search(plain, "red", model=tiny_model)
    junk = tmp_path / "junk.parquet"
    junk.write_text("nope")
    with pytest.raises(IndexFileError, match="not an rsclip-geo index: not a readable Parquet file"):
        search(junk, "red", model=tiny_model)


def test_search_ranks_matching_tiles(tiny_model, scene):
    found = search(scene, "red", top=3, model=tiny_model, scales=T32)
    hits = found.frame
    assert list(hits["rank"]) == [1, 2, 3] and len(found) == 3
    red_cells = {(0, 0), (1, 1)}
    assert {(r, c) for r, c in zip(hits["row"][:2], hits["col"][:2])} == red_cells
    assert hits["score"].is_monotonic_decreasing
    assert hits.crs.to_epsg() == 32633
    assert hits.geometry.iloc[0].bounds in [(500000.0, 4999680.0, 500320.0, 5000000.0),
                                            (500320.0, 4999360.0, 500640.0, 4999680.0)]
    # the typed fields: every tile's score, row for row with its index
    assert found.query == "red" and len(found.indexes) == len(found.scores) == 1 and found.n_tiles == 6
    index, scores = found.indexes[0], found.scores[0]
    assert scores.shape == (len(index),) == (6,)
    at = {(r, c): s for r, c, s in zip(index.frame["row"], index.frame["col"], scores)}
    assert [at[(r, c)] for r, c in zip(hits["row"], hits["col"])] == pytest.approx(hits["score"].tolist(), abs=1e-6)
    assert sorted(scores, reverse=True)[:3] == pytest.approx(hits["score"].tolist(), abs=1e-6)

def test_negative_query_changes_order(tiny_model, tmp_path):
    purple, orange = (200, 30, 200), (220, 160, 30)  # both red; one also blue, one also green
    scene = write_geotiff(tmp_path / "p.tif", colour_blocks([[purple, orange]], 32))
    plain = search(scene, "red", top=2, model=tiny_model, scales=T32).frame
    away_from_blue = search(scene, "red", top=2, model=tiny_model, scales=T32, negative="blue",
                            negative_weight=1.0).frame
    away_from_green = search(scene, "red", top=2, model=tiny_model, scales=T32, negative="green",
                             negative_weight=1.0).frame
    assert away_from_blue["col"].iloc[0] == 1 and away_from_green["col"].iloc[0] == 0
    assert set(plain["col"]) == {0, 1}


def test_many_scenes_in_different_crs(tiny_model, tmp_path):
    a = write_geotiff(tmp_path / "a.tif", colour_blocks([[GREEN, GREEN]], 32))
    b = write_geotiff(tmp_path / "b.tif", colour_blocks([[GREEN, RED]], 32), crs="EPSG:32632")
    found = search([a, b], "red", top=1, model=tiny_model, scales=T32)
    hits = found.frame
    assert hits.crs.to_epsg() == 4326
    # every scene's tile scores, in the order of the indexes (the hits are cut to the top 1 over both)
    assert [ix.scene for ix in found.indexes] == [str(a.resolve()), str(b.resolve())]
    assert [len(s) for s in found.scores] == [2, 2] and found.scores[1][1] == pytest.approx(hits["score"].iloc[0])
    assert found.scores[1][1] == max(max(s) for s in found.scores)
    assert hits["scene"].iloc[0] == str(b.resolve()) and hits["col"].iloc[0] == 1
    # the red tile's footprint, reprojected by the test itself
    from pyproj import Transformer
    x, y = Transformer.from_crs(32632, 4326, always_xy=True).transform(500320 + 160, 5000000 - 160)
    c = hits.geometry.iloc[0].centroid
    assert abs(c.x - x) < 1e-4 and abs(c.y - y) < 1e-4
    # a folder of scenes is searched as one, and then its indexes are
    folder_hits = search(tmp_path, "red", top=1, model=tiny_model, scales=T32).frame
    assert folder_hits["scene"].iloc[0] == str(b.resolve())


def test_index_of_another_model_refused(tiny_model, scene, tiny_bundle, tmp_path):
    path = write_index(build_index(scene, tiny_model, T32), tmp_path / "i.parquet")
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    meta = json.loads((other / "model.json").read_text())
    meta["name"] = "other"
    (other / "model.json").write_text(json.dumps(meta))
    other_model = rsclip_geo.load_model(other, device="cpu")
    with pytest.raises(IndexFileError, match="built with model 'tiny-rgb'"):
        search(path, "red", model=other_model)
    with pytest.raises(IndexFileError, match="built with model 'tiny-rgb'"):  # a loaded index too
        search(read_index(path), "red", model=other_model)


def test_similarity_grid(tiny_model, scene, tmp_path):
    import rasterio

    hits = search(scene, "blue", top=6, model=tiny_model, scales=T32)
    tiles, transform = similarity_grid(hits.indexes[0], hits.scores[0], tile_grid=True)
    assert tiles.shape == (2, 3) and transform == Affine(320, 0, 500000, 0, -320, 5000000)
    assert {tuple(x) for x in np.argwhere(tiles > 0.5)} == {(0, 2), (1, 0)}
    grid, transform = similarity_grid(hits.indexes[0], hits.scores[0])  # the scene's grid
    assert grid.shape == (64, 96) and transform == Affine(10, 0, 500000, 0, -10, 5000000)
    assert (grid == np.kron(tiles, np.ones((32, 32), np.float32))).all()
    # the same grid through the result, and written as the score raster the CLI and the QGIS plugin write
    same, same_transform = hits.similarity_grid()
    assert (same == grid).all() and same_transform == transform
    assert (hits.similarity_grid(tile_grid=True)[0] == tiles).all()
    path = hits.write_scores(tmp_path / "scores.tif")
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == transform and ds.shape == (64, 96)
        assert (ds.read(1) == grid).all() and "score: blue" in (ds.descriptions[0] or "")


def test_empty_folder_and_missing_source(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RasterInputError, match="neither rsclip-geo indexes nor rasters"):
        search(tmp_path / "empty", "red", model=tiny_model)
    with pytest.raises(RasterInputError, match="does not exist"):
        search(tmp_path / "nope.tif", "red", model=tiny_model)


def test_empty_query_or_negative_is_a_clear_error_before_any_indexing(tiny_model, tiny_bundle, scene, tmp_path):
    for query, negative, what in (("  ", None, "empty search query"), ("red", ["blue", " "], "empty negative prompt")):
        with pytest.raises(LabelError, match=what):
            search(scene, query, negative=negative, model=tiny_model, scales=T32)
    assert not sidecar_path(scene).exists()  # refused before the scene was indexed
    red = search(scene, " red\n", top=2, model=tiny_model, scales=T32).frame  # spaces around a query do not count
    assert red[["row", "col"]].values.tolist() == search(scene, "red", top=2, model=tiny_model, scales=T32
                                                         ).frame[["row", "col"]].values.tolist()
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    out = tmp_path / "hits.gpkg"
    for args, message in (((" ",), "empty query"), (("red", "--negative", ""), "empty negative prompt")):
        r = run("search", scene, *args, "--model", tiny_bundle, "-o", out)
        assert r.exit_code == 2 and message in r.output and r.exception is not None, r.output
        assert "Traceback" not in r.output and not out.exists()
    for scales in ("0.4", "32,40.5"):  # pixel sizes are never rounded (0.4 px once became a 0 px tile)
        r = run("search", scene, "red", "--scales", scales, "--model", tiny_bundle, "-o", out)
        assert r.exit_code == 2 and "Invalid value for '--scales': tile sizes in pixels are whole numbers" in r.output


def test_cli_index_then_search_with_heatmap(tiny_bundle, scene, tmp_path):
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)
    r = run("index", scene, "--model", tiny_bundle, "--scales", "32", "-o", tmp_path / "i.parquet", "-q")
    assert r.exit_code == 0, r.output
    r = run("search", tmp_path / "i.parquet", "green", "--model", tiny_bundle, "-o", tmp_path / "h.gpkg",
            "--heatmap", tmp_path / "h.tif", "--top", "2")
    assert r.exit_code == 0, r.output
    import geopandas as gpd
    hits = gpd.read_file(tmp_path / "h.gpkg")
    assert {(r_, c) for r_, c in zip(hits["row"], hits["col"])} == {(0, 1), (1, 2)}
    with rasterio.open(tmp_path / "h.tif") as ras:
        assert ras.crs.to_epsg() == 32633 and ras.transform == Affine(10, 0, 500000, 0, -10, 5000000)
        assert ras.profile["tiled"] and ras.dtypes[0] == "float32" and ras.shape == (64, 96)  # the scene's grid
        grid = ras.read(1)[::32, ::32]
    assert np.unravel_index(np.argmax(grid), grid.shape) in [(0, 1), (1, 2)]
    r = run("search", tmp_path / "i.parquet", "green", "--model", tiny_bundle, "-o", tmp_path / "h.gpkg")
    assert r.exit_code == 1 and "already exists" in r.output


def test_model_fingerprint_is_hashed_once_per_model(tiny_bundle, scene, monkeypatch):
    """Index checks run on every search; hashing the ONNX files each time cost 60 ms per query (default model)."""
    import rsclip_geo.runtime.encoder as encoder_module
    from rsclip_geo.runtime.bundle import bundle_fingerprint

    model = rsclip_geo.load_model(tiny_bundle, device="cpu")
    calls = []
    monkeypatch.setattr(encoder_module, "bundle_fingerprint", lambda b: calls.append(b) or bundle_fingerprint(b))
    index = build_index(scene, model, T32)
    for query in ("red", "green", "blue"):
        search(index, query, top=2, model=model)
    assert len(calls) == 1 and model.fingerprint == bundle_fingerprint(model.bundle)


def test_large_index_round_trips_across_row_groups(tiny_model, scene, tmp_path):
    """Indexes larger than one Parquet row group (written so they decode in parallel) read back row for row."""
    import pyarrow.parquet as pq
    import shapely

    from rsclip_geo.embeddings.index import ROW_GROUP_ROWS, SceneIndex

    small = build_index(scene, tiny_model, T32)
    n = ROW_GROUP_ROWS + 1234
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, tiny_model.embed_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cols = np.arange(n)
    frame = small.frame.iloc[np.zeros(n, int)].reset_index(drop=True)
    frame["col"] = cols.astype(np.int32)
    frame = frame.set_geometry(shapely.box(cols, 0, cols + 1, 1), crs=small.frame.crs)
    path = write_index(SceneIndex(frame, emb, small.meta), tmp_path / "big.parquet")
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    back = read_index(path)
    assert list(back.frame["col"]) == list(cols)
    assert back.embeddings.flags.writeable and back.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(back.embeddings, axis=1), 1.0, atol=1e-6)
    assert (back.embeddings * emb).sum(axis=1).min() > 0.999


def test_rotations_are_part_of_the_index_key(tiny_bundle, scene, tmp_path):
    plain = rsclip_geo.load_model(tiny_bundle, device="cpu")
    turned = rsclip_geo.load_model(tiny_bundle, device="cpu", rotations=4)
    load_or_build_index(scene, plain, T32)
    rebuilt = Counter()
    load_or_build_index(scene, turned, T32, progress=rebuilt)
    assert rebuilt.calls > 0  # the sidecar of the plain run is not taken for a 4-rotation one
    assert read_index_meta(sidecar_path(scene))["model"]["fingerprint"] == plain.fingerprint + "+rot4"
    reused = Counter()
    load_or_build_index(scene, turned, T32, progress=reused)
    assert reused.calls == 0
    path = write_index(build_index(scene, plain, T32), tmp_path / "plain.parquet")
    with pytest.raises(IndexFileError, match=r"built with --rotations 1, this run uses --rotations 4"):
        search(path, "red", model=turned)
    result = CliRunner().invoke(main, ["search", str(path), "red", "--model", str(tiny_bundle), "--device", "cpu",
                                       "--rotations", "4", "-o", str(tmp_path / "hits.gpkg")])
    assert result.exit_code != 0 and "--rotations 1, this run uses --rotations 4" in result.output
    assert "search it with the --rotations it was built with" in result.output
    assert not (tmp_path / "hits.gpkg").exists()
