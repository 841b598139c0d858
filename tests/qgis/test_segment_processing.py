"""Processing 'Find objects by text': red objects on a green field, the tiny dense bundle, run in the worker."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def scene_layer(project, tmp_path):
    from affine import Affine
    from qgis.core import QgsRasterLayer

    from tests.utils.rasters import write_geotiff

    img = np.zeros((3, 256, 256), np.uint8)
    img[1] = 120
    for r, c in ((40, 40), (40, 160), (170, 100)):  # three red 40 m squares, well apart
        img[:, r:r + 40, c:c + 40] = np.array([220, 30, 30], np.uint8)[:, None, None]
    path = write_geotiff(tmp_path / "objects.tif", img, transform=Affine(1, 0, 500000, 0, -1, 5000000))
    layer = QgsRasterLayer(str(path), "objects")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


@pytest.fixture(scope="module")
def dense_bundle(tmp_path_factory):
    from tests.utils.tiny_dense import build_tiny_dense_bundle

    return build_tiny_dense_bundle(tmp_path_factory.mktemp("tiny_dense_qgis"))


def test_find_objects_by_text(provider, scene_layer, dense_bundle, tmp_path):
    import processing
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    from qgis_plugin.processing.segment import style_objects

    out, dense = tmp_path / "objects.gpkg", tmp_path / "dense.tif"
    res = processing.run("rsclipgeo:findobjects", {"INPUT": scene_layer, "QUERY": "red", "MODEL": str(dense_bundle),
                                                   "DEVICE": 1, "OUTPUT": str(out), "DENSE": str(dense)})
    layer = QgsVectorLayer(res["OUTPUT"], "objects", "ogr")
    assert layer.isValid() and layer.featureCount() == 3
    assert layer.crs().authid() == "EPSG:32633"
    assert {"score", "score_mean", "area_m2"} <= set(layer.fields().names())
    areas = sorted(f["area_m2"] for f in layer.getFeatures())
    assert all(1200 < a < 2100 for a in areas), areas  # 40 m squares, blurred by the 8 m cells
    raster = QgsRasterLayer(res["DENSE"], "dense")
    assert raster.isValid() and raster.width() == 256 and raster.crs().authid() == "EPSG:32633"
    style_objects(layer)
    assert layer.labelsEnabled() and "score" in layer.labeling().settings().fieldName


def test_loaded_outputs_are_named_by_the_query(provider, project, scene_layer, dense_bundle, tmp_path):
    """Two queries on one scene give layers a user can tell apart (not two 'Objects')."""
    import processing

    for q in ("red", "red squares"):
        processing.runAndLoadResults("rsclipgeo:findobjects", {
            "INPUT": scene_layer, "QUERY": q, "MODEL": str(dense_bundle), "DEVICE": 1,
            "OUTPUT": str(tmp_path / f"{q}.gpkg"), "DENSE": str(tmp_path / f"{q}.tif")})
    names = sorted(layer.name() for layer in project.mapLayers().values())
    assert names == ["Dense score: red", "Dense score: red squares", "Objects: red", "Objects: red squares",
                     "objects"], names


def test_find_objects_needs_a_dense_head(provider, scene_layer, tiny_bundle):
    import processing
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="dense head"):
        processing.run("rsclipgeo:findobjects", {"INPUT": scene_layer, "QUERY": "red", "MODEL": str(tiny_bundle),
                                                 "DEVICE": 1, "OUTPUT": "TEMPORARY_OUTPUT"})


def test_find_objects_with_the_rotation_ensemble(provider, scene_layer, dense_bundle, tmp_path):
    """The advanced ROTATIONS box reaches the dense head: its saved cells are keyed '+rot4', beside the plain ones'
    key, so the second run re-encodes instead of reusing them."""
    import json
    from pathlib import Path

    import processing
    from qgis.core import QgsApplication

    algorithm = QgsApplication.processingRegistry().algorithmById("rsclipgeo:findobjects")
    assert algorithm.parameterDefinition("ROTATIONS").defaultValue() == 0  # '1: each tile as read'
    keys = []
    for rotations in (0, 2):  # 1 and 4 quarter turns
        res = processing.run("rsclipgeo:findobjects", {"INPUT": scene_layer, "QUERY": "red",
                                                       "MODEL": str(dense_bundle), "DEVICE": 1,
                                                       "ROTATIONS": rotations, "OUTPUT": "TEMPORARY_OUTPUT"})
        assert res["OUTPUT"] is not None
        scene = Path(scene_layer.source())
        meta = scene.with_name(scene.name + ".rsclip-dense.json")  # the cells saved beside the scene
        keys.append(json.loads(meta.read_text())["model"]["fingerprint"])
    assert keys[1] == keys[0] + "+rot4"
