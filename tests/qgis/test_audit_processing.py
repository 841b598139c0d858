"""Processing 'Audit labels': polygons (here in EPSG:4326) over a UTM scene, run in the worker, styled output."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def provider(qgis_app):
    from qgis.core import QgsApplication

    from qgis_plugin.processing.provider import RsclipProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("rsclipgeo") is None:
        registry.addProvider(RsclipProvider())
    yield registry.providerById("rsclipgeo")
    registry.removeProvider("rsclipgeo")


@pytest.fixture
def blocks(tmp_path):
    """3x3 colour blocks (10 m pixels, UTM) and one polygon per block in EPSG:4326; blocks 1 and 5 mislabelled."""
    import geopandas as gpd
    from shapely.geometry import box

    from tests.test_audit import BLOCK, LAYOUT, NAMES, ORIGIN
    from tests.utils.rasters import colour_blocks, write_geotiff

    scene = write_geotiff(tmp_path / "blocks.tif", colour_blocks(LAYOUT, BLOCK))
    wrong = {"red": "green", "green": "blue", "blue": "red"}
    geoms, labels = [], []
    for r, row in enumerate(LAYOUT):
        for c, colour in enumerate(row):
            x0, y0 = ORIGIN[0] + c * BLOCK * 10, ORIGIN[1] - r * BLOCK * 10
            geoms.append(box(x0, y0 - BLOCK * 10, x0 + BLOCK * 10, y0).buffer(-40))
            labels.append(wrong[NAMES[colour]] if len(labels) in (1, 5) else NAMES[colour])
    path = tmp_path / "cover.gpkg"
    gpd.GeoDataFrame({"cover": labels}, geometry=geoms, crs="EPSG:32633").to_crs(4326).to_file(path)
    return scene, path


def test_audit_labels_algorithm(provider, blocks, tiny_bundle, tmp_path):
    import processing
    from qgis.core import QgsCategorizedSymbolRenderer, QgsRasterLayer, QgsVectorLayer

    from qgis_plugin.processing.audit import style_audit

    scene, labels = blocks
    scene_layer, label_layer = QgsRasterLayer(str(scene), "scene"), QgsVectorLayer(str(labels), "cover", "ogr")
    assert scene_layer.isValid() and label_layer.isValid()
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


def test_audit_labels_bad_field_is_a_processing_error(provider, blocks, tiny_bundle):
    import processing
    from qgis.core import QgsProcessingException, QgsRasterLayer, QgsVectorLayer

    scene, labels = blocks
    with pytest.raises(QgsProcessingException):
        processing.run("rsclipgeo:auditlabels", {"INPUT": QgsRasterLayer(str(scene), "scene"),
                                                 "LABELS": QgsVectorLayer(str(labels), "cover", "ogr"),
                                                 "FIELD": "nope", "MODEL": str(tiny_bundle), "DEVICE": 1,
                                                 "OUTPUT": "TEMPORARY_OUTPUT"})
