"""Every Processing algorithm through processing.run on a real scene, outputs checked in QGIS."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def common(provider, scene_layer, tiny_bundle):
    # 160 map units (metres, EPSG:32618) / 5 m pixels = 32 px tiles; device 1 = cpu
    return {"INPUT": scene_layer, "TILE_SIZE": 160.0, "MODEL": str(tiny_bundle), "DEVICE": 1, "BATCH_SIZE": 64}


def _vector(path):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(path), "out", "ogr")
    assert layer.isValid()
    return layer


N_TILES = -(-515 // 32) * -(-403 // 32)


def test_classify_tiles(common, scene_layer, tmp_path):
    import processing

    out = tmp_path / "labels.gpkg"
    res = processing.run("rsclipgeo:classifytiles", {**common, "LABELS": "red,green,blue", "TOP_K": 2,
                                                     "OUTPUT": str(out)})
    layer = _vector(res["OUTPUT"])
    assert layer.crs() == scene_layer.crs()
    assert 0 < layer.featureCount() <= N_TILES
    assert {f["label"] for f in layer.getFeatures()} <= {"red", "green", "blue"}
    assert {"label", "score", "label_1", "score_1", "label_2", "score_2", "valid_frac"} <= set(layer.fields().names())
    assert scene_layer.extent().contains(layer.extent())
    scores = np.array([f["score"] for f in layer.getFeatures()])
    assert np.all((scores >= 1 / 3 - 1e-6) & (scores <= 1))  # the best of 3 softmax probabilities


def test_classify_needs_exactly_one_label_source(common):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="exactly one"):
        processing.run("rsclipgeo:classifytiles", {**common, "OUTPUT": "TEMPORARY_OUTPUT"})


def test_search_by_text_with_score_raster(common, scene_layer, tmp_path):
    import processing
    from qgis.core import QgsRasterLayer

    res = processing.run("rsclipgeo:searchbytext", {**common, "QUERY": "blue", "TOP": 7,
                                                    "OUTPUT": str(tmp_path / "hits.gpkg"),
                                                    "SCORES": str(tmp_path / "scores.tif")})
    hits = _vector(res["OUTPUT"])
    assert hits.featureCount() == 7 and hits.crs() == scene_layer.crs()
    ranks = sorted((f["rank"], f["score"]) for f in hits.getFeatures())
    assert [r for r, _ in ranks] == list(range(1, 8))
    assert all(a[1] >= b[1] for a, b in zip(ranks, ranks[1:]))
    scores = QgsRasterLayer(res["SCORES"], "scores", "gdal")
    assert scores.isValid() and scores.crs() == scene_layer.crs()
    assert scores.dataProvider().bandStatistics(1).maximumValue == pytest.approx(ranks[0][1], abs=1e-5)


def test_localization_heatmap(common, scene_layer, tmp_path):
    import processing
    from qgis.core import QgsRasterLayer

    params = {k: v for k, v in common.items() if k != "TILE_SIZE"}
    res = processing.run("rsclipgeo:localizationheatmap", {**params, "QUERY": "green", "WINDOWS": "160,320",
                                                           "OUTPUT": str(tmp_path / "heat.tif")})
    layer = QgsRasterLayer(res["OUTPUT"], "heat", "gdal")
    assert layer.isValid() and layer.crs() == scene_layer.crs()
    assert layer.extent().toString(2) == scene_layer.extent().toString(2)
    stats = layer.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue < stats.maximumValue <= 1.0


@pytest.mark.parametrize("alg,output", [("localizationheatmap", "OUTPUT"), ("searchbytext", "SCORES")])
def test_a_raster_output_aimed_at_the_scene_is_refused(common, scene_path, tmp_path, alg, output):
    """Processing's raster destinations may name the scene itself; the worker's raster was copied over it."""
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingOutputLayerDefinition

    before = scene_path.read_bytes()
    params = {**common, "QUERY": "green", "OUTPUT": str(tmp_path / "hits.gpkg")}
    for dest in (str(scene_path), QgsProcessingOutputLayerDefinition(str(scene_path))):
        with pytest.raises(QgsProcessingException, match="is the input scene"):
            processing.run(f"rsclipgeo:{alg}", {**params, output: dest})
    assert scene_path.read_bytes() == before and not (tmp_path / "hits.gpkg").exists()


def test_loaded_outputs_are_named_by_the_query(common, project, tmp_path):
    """Search hits, tile scores and heatmaps carry their query in the layer tree (two runs, two names)."""
    import processing

    params = {k: v for k, v in common.items() if k != "TILE_SIZE"}
    processing.runAndLoadResults("rsclipgeo:searchbytext", {**common, "QUERY": "blue", "TOP": 3,
                                                            "OUTPUT": str(tmp_path / "hits.gpkg"),
                                                            "SCORES": str(tmp_path / "scores.tif")})
    processing.runAndLoadResults("rsclipgeo:localizationheatmap", {**params, "QUERY": "green", "WINDOWS": "160",
                                                                   "OUTPUT": str(tmp_path / "heat.tif")})
    names = sorted(layer.name() for layer in project.mapLayers().values())
    assert names == ["Heatmap: green", "Search hits: blue", "Tile scores: blue", "rgbn"], names


def test_count_objects(common, scene_layer, tmp_path):
    import processing

    res = processing.run("rsclipgeo:countobjects", {**common, "OBJECT": "red car", "MAX_COUNT": 4,
                                                    "OUTPUT": str(tmp_path / "counts.gpkg")})
    layer = _vector(res["OUTPUT"])
    assert layer.crs() == scene_layer.crs() and 0 < layer.featureCount() <= N_TILES
    counts = [f["count"] for f in layer.getFeatures()]
    assert min(counts) >= 1 and max(counts) <= 4


def test_build_index_beside_the_scene_and_to_a_file(common, scene_path, tmp_path):
    import processing

    res = processing.run("rsclipgeo:buildindex", common)
    sidecar = scene_path.with_name(scene_path.name + ".rsclip-index.parquet")
    assert res["OUTPUT"] == str(sidecar) and sidecar.is_file()
    assert 0 < res["N_TILES"] <= N_TILES
    explicit = tmp_path / "explicit.parquet"
    res2 = processing.run("rsclipgeo:buildindex", {**common, "OUTPUT": str(explicit)})
    assert res2["OUTPUT"] == str(explicit) and explicit.is_file() and res2["N_TILES"] == res["N_TILES"]
    # the rotation-ensemble box reaches the model: the index records it (and a plain one is not reused for it)
    from rsclip_geo.embeddings.index import read_index_meta

    plain = read_index_meta(explicit)["model"]["fingerprint"]
    turned = tmp_path / "turned.parquet"
    processing.run("rsclipgeo:buildindex", {**common, "ROTATIONS": 2, "OUTPUT": str(turned)})  # enum 2: 4 turns
    assert read_index_meta(turned)["model"]["fingerprint"] == plain + "+rot4"
    processing.run("rsclipgeo:buildindex", {**common, "ROTATIONS": 1})
    assert read_index_meta(sidecar)["model"]["fingerprint"] == plain + "+rot2"


def test_bands_parameter_and_bad_band_count(common, scene_layer, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    res = processing.run("rsclipgeo:classifytiles", {**common, "BANDS": [4], "LABELS": "red,blue",
                                                     "OUTPUT": str(tmp_path / "nir.gpkg")})
    assert _vector(res["OUTPUT"]).featureCount() > 0  # one band (NIR) replicated to RGB
    with pytest.raises(QgsProcessingException, match="1 or 3 bands"):
        processing.run("rsclipgeo:classifytiles", {**common, "BANDS": [1, 2], "LABELS": "red",
                                                   "OUTPUT": "TEMPORARY_OUTPUT"})


def test_web_layer_is_refused_with_the_clear_message(provider, project, tiny_bundle):
    import processing
    from qgis.core import QgsProcessingException, QgsRasterLayer

    xyz = QgsRasterLayer("type=xyz&url=https://tile.openstreetmap.org/{z}/{x}/{y}.png", "OSM", "wms")
    project.addMapLayer(xyz)
    with pytest.raises(QgsProcessingException, match="only file-based GDAL rasters are supported"):
        processing.run("rsclipgeo:searchbytext", {"INPUT": xyz, "QUERY": "x", "MODEL": str(tiny_bundle),
                                                  "OUTPUT": "TEMPORARY_OUTPUT"})


def test_cancel_through_feedback(common, tmp_path):
    from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda _: feedback.cancel())
    alg = QgsApplication.processingRegistry().createAlgorithmById("rsclipgeo:classifytiles")
    context = QgsProcessingContext()
    params = {**common, "LABELS": "red,green", "OUTPUT": str(tmp_path / "c.gpkg")}
    with pytest.raises(QgsProcessingException, match="canceled"):
        alg.run(params, context, feedback, catchExceptions=False)
    assert not (tmp_path / "c.gpkg").exists()
