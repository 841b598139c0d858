"""Processing 'Audit labels': polygons (here in EPSG:4326) over a UTM scene, run in the worker, styled output."""

from __future__ import annotations

import pytest


@pytest.fixture
def layers(project, blocks):
    """The scene and the labels as layers owned by the project (cleared after the test, before QGIS exits)."""
    from qgis.core import QgsRasterLayer, QgsVectorLayer

    scene, labels = blocks
    scene_layer, label_layer = QgsRasterLayer(str(scene), "scene"), QgsVectorLayer(str(labels), "cover", "ogr")
    assert scene_layer.isValid() and label_layer.isValid()
    project.addMapLayers([scene_layer, label_layer])
    return scene_layer, label_layer


@pytest.fixture
def blocks(qgis_app, tmp_path):
    """3x3 colour blocks (10 m pixels, UTM) and one polygon per block, saved by QGIS in EPSG:4326 (no shapely or
    geopandas in the QGIS process); blocks 1 and 5 mislabelled."""
    import json

    from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsVectorFileWriter,
                           QgsVectorLayer)

    from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

    BLOCK, ORIGIN = 32, (500000.0, 5000000.0)  # as tests/test_audit.py (not imported: it loads shapely)
    LAYOUT = [[RED, GREEN, BLUE], [GREEN, BLUE, RED], [BLUE, RED, GREEN]]
    NAMES = {RED: "red", GREEN: "green", BLUE: "blue"}

    scene = write_geotiff(tmp_path / "blocks.tif", colour_blocks(LAYOUT, BLOCK))
    wrong = {"red": "green", "green": "blue", "blue": "red"}
    features, side, inset = [], BLOCK * 10, 40
    for r, row in enumerate(LAYOUT):
        for c, colour in enumerate(row):
            x0, y1 = ORIGIN[0] + c * side + inset, ORIGIN[1] - r * side - inset
            x1, y0 = x0 + side - 2 * inset, y1 - side + 2 * inset
            label = wrong[NAMES[colour]] if len(features) in (1, 5) else NAMES[colour]
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            features.append({"type": "Feature", "properties": {"cover": label},
                             "geometry": {"type": "Polygon", "coordinates": [ring]}})
    utm = tmp_path / "cover_utm.geojson"
    utm.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    layer = QgsVectorLayer(str(utm), "cover", "ogr")
    layer.setCrs(QgsCoordinateReferenceSystem("EPSG:32633"))
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.ct = QgsCoordinateTransform(layer.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    path = tmp_path / "cover.gpkg"
    written = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), QgsProject.instance().transformContext(),
                                                        options)
    assert written[0] == QgsVectorFileWriter.NoError, written
    return scene, path


def test_audit_labels_algorithm(provider, layers, tiny_bundle, tmp_path):
    import processing
    from qgis.core import QgsCategorizedSymbolRenderer, QgsVectorLayer

    from qgis_plugin.processing.audit import style_audit

    scene_layer, label_layer = layers
    out = tmp_path / "audited.gpkg"
    res = processing.run("rsclipgeo:auditlabels", {"INPUT": scene_layer, "LABELS": label_layer, "FIELD": "cover",
                                                    "MODEL": str(tiny_bundle), "DEVICE": 1, "OUTPUT": str(out)})
    layer = QgsVectorLayer(res["OUTPUT"], "audited", "ogr")
    assert layer.isValid() and layer.featureCount() == 9
    assert layer.crs().authid() == "EPSG:4326"  # the labels' CRS, not the scene's
    assert {"agreement", "best_label", "best_score", "flag", "n_windows"} <= set(layer.fields().names())
    feats = list(layer.getFeatures())
    assert [f["cover"] for f in feats] == [f["cover"] for f in label_layer.getFeatures()]  # input order
    assert [bool(f["flag"]) for f in feats] == [i in (1, 5) for i in range(9)]
    assert all(f["n_windows"] == 4 for f in feats)
    style_audit(layer)
    assert isinstance(layer.renderer(), QgsCategorizedSymbolRenderer) and layer.renderer().classAttribute() == "flag"
    assert layer.attributeTableConfig().sortExpression() == '"agreement"'


def test_audit_labels_bad_field_is_a_processing_error(provider, layers, tiny_bundle):
    import processing
    from qgis.core import QgsProcessingException

    scene_layer, label_layer = layers
    with pytest.raises(QgsProcessingException):
        processing.run("rsclipgeo:auditlabels", {"INPUT": scene_layer, "LABELS": label_layer, "FIELD": "nope",
                                                 "MODEL": str(tiny_bundle), "DEVICE": 1,
                                                 "OUTPUT": "TEMPORARY_OUTPUT"})
