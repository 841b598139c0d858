"""The dock panel: model card, bands from the layer, tile size in metres, whole layer or visible extent, actions
that run the plugin's tasks, inputs remembered between sessions."""

from __future__ import annotations

import json
import shutil
import time

import pytest


@pytest.fixture
def naip_layer(project, shared_data, tmp_path):
    from qgis.core import QgsRasterLayer

    src = shared_data / "scenes" / "naip_2020_rgbn_5m.tif"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    layer = QgsRasterLayer(str(shutil.copy(src, tmp_path / "naip.tif")), "naip", "gdal")
    project.addMapLayer(layer)
    return layer


@pytest.fixture
def plugin(iface, plugin_settings):
    import qgis_plugin

    p = qgis_plugin.classFactory(iface)
    p.initGui()
    yield p
    p.unload()


def _wait(plugin, seconds=90):
    from qgis.core import QgsApplication

    deadline = time.time() + seconds
    while plugin.last_result is None and time.time() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert plugin.last_result is not None


def test_panel_docks_with_the_model_card_and_the_layer_bands(plugin, iface, naip_layer, tiny_bundle):
    from qgis.gui import QgsDockWidget

    docks = [d for d in iface.mainWindow().findChildren(QgsDockWidget) if d.objectName() == "rsclipGeoPanel"]
    assert docks == [plugin.panel]
    panel = plugin.panel
    name = json.loads((tiny_bundle / "model.json").read_text())["name"]
    assert panel.model_choice() == ("folder", "") and panel.card.text().startswith(name)
    assert "px tiles" in panel.card.text() and "licence:" in panel.card.text()
    panel.model.setCurrentIndex(panel.model.findData("default|"))
    from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

    default_name = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["name"]
    assert panel.card.text().startswith(default_name) and "trained on: AID" in panel.card.text()
    assert "AID zero-shot top-1" in panel.card.text()
    panel.layer.setLayer(naip_layer)
    assert panel.chosen_bands() == (1, 2, 3)  # as the layer shows them
    assert "bands 1,2,3" in panel.band_hint.text()


def test_panel_search_on_the_whole_layer(plugin, iface, naip_layer, project):
    panel = plugin.panel
    panel.layer.setLayer(naip_layer)
    panel.tile.setValue(640)
    panel.text.setText("a field")
    assert panel.run("search") is not None
    _wait(plugin)
    result = plugin.last_result
    assert result.ok, result.message
    assert result.group == "Search: 'a field' (naip)" and result.params.tile_size_m == 640
    scores = project.mapLayer(result.layers[1])
    assert scores.extent() == naip_layer.extent()


def test_panel_visible_extent_runs_on_that_part_of_the_grid(plugin, iface, naip_layer, project):
    from osgeo import gdal
    from qgis.core import QgsRectangle

    from tests.qgis.helpers import run_task
    from qgis_plugin.tasks import ClassifyTask

    panel = plugin.panel
    panel.layer.setLayer(naip_layer)
    panel.tile.setValue(320)
    panel.labels.setText("red, green")
    panel.area.setCurrentText("Visible extent")
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(naip_layer.crs())
    canvas.setExtent(QgsRectangle(486000, 5206000, 488000, 5207500))
    params = panel.params("classify")
    assert params.scene.endswith(".vrt") and params.bands == (1, 2, 3)
    ds = gdal.Open(params.scene)
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    assert (dx, dy) == (5.0, -5.0) and (x0 - 485899) % 5 == 0 and (5209246 - y0) % 5 == 0  # the scene's grid
    ext = canvas.extent()  # the canvas's aspect ratio widens it; the area is clipped to the scene
    assert x0 == 485899 + 5 * max(0, (ext.xMinimum() - 485899) // 5)
    assert y0 == 5209246 - 5 * max(0, (5209246 - ext.yMaximum()) // 5)
    assert x0 + 5 * ds.RasterXSize >= min(ext.xMaximum(), 490569) > x0 + 5 * (ds.RasterXSize - 1)
    ok, result = run_task(ClassifyTask(params))
    assert ok, result.message
    layer = project.mapLayer(result.layers[0])
    assert layer.featureCount() > 0
    visible = QgsRectangle(x0, y0 + ds.RasterYSize * dy, x0 + ds.RasterXSize * dx, y0)
    assert visible.contains(layer.extent()) and naip_layer.extent().contains(visible)
    canvas.setExtent(QgsRectangle(0, 0, 100, 100))
    with pytest.raises(ValueError, match="does not overlap"):
        panel.params("classify")


def test_panel_area_of_the_selected_features(plugin, iface, naip_layer, project):
    from osgeo import gdal
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    panel = plugin.panel
    panel.layer.setLayer(naip_layer)
    panel.labels.setText("red, green")
    panel.area.setCurrentText("Extent of the selected features")
    fields = QgsVectorLayer("Polygon?crs=EPSG:4326", "fields", "memory")
    project.addMapLayer(fields)
    iface.setActiveLayer(fields)
    with pytest.raises(ValueError, match="select features"):
        panel.params("classify")
    # a polygon given in EPSG:4326 inside the scene (NAD83 / UTM 14N, about 486700-487800 E, 5206600-5207800 N)
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt("POLYGON((-99.175 47.013, -99.160 47.013, -99.160 47.024, "
                                            "-99.175 47.024, -99.175 47.013))"))
    fields.dataProvider().addFeatures([feature])
    fields.selectAll()
    params = panel.params("classify")
    ds = gdal.Open(params.scene)
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    assert (x0 - 485899) % 5 == 0 and (5209246 - y0) % 5 == 0 and dx == 5
    assert 0 < ds.RasterXSize < 934 and 0 < ds.RasterYSize < 723  # a window, not the whole scene
    assert "outputs go to" in panel.outputs.text()


def test_panel_remembers_its_inputs(iface, plugin_settings, naip_layer):
    from qgis_plugin.settings import Settings
    from qgis_plugin.ui.panel import RsclipPanel

    panel = RsclipPanel(iface, lambda a, p: None, iface.mainWindow())
    panel.text.setText("solar farm")
    panel.labels.setText("water, forest")
    panel.area.setCurrentText("Visible extent")
    panel.tile.setValue(500)
    panel.save()
    again = RsclipPanel(iface, lambda a, p: None, iface.mainWindow())
    assert (again.text.text(), again.labels.text(), again.area.currentText(), again.tile.value()) == (
        "solar farm", "water, forest", "Visible extent", 500)
    assert Settings.load().tile_size_m == 500  # the toolbar and the dialogs use the same tile size
    with pytest.raises(ValueError, match="type what to look for"):
        again.text.setText("")
        again.params("search")


def test_audit_action_uses_the_active_polygon_layer_over_the_current_scene(plugin, iface, naip_layer, project):
    """Toolbar/menu 'Audit labels...': the active polygon layer and the scene prefill the Processing dialog."""
    from qgis.core import QgsVectorLayer
    from qgis.PyQt.QtWidgets import QAction

    names = [a.text() for a in iface.mainWindow().findChildren(QAction) if a in plugin.actions]
    assert "Audit labels..." in names
    polygons = QgsVectorLayer("Polygon?crs=EPSG:26914&field=landcover:string", "landcover", "memory")
    points = QgsVectorLayer("Point?crs=EPSG:26914", "points", "memory")
    project.addMapLayers([polygons, points])
    iface.setActiveLayer(polygons)
    assert plugin.audit_parameters() == {"LABELS": polygons, "INPUT": naip_layer}
    iface.setActiveLayer(points)  # not polygons: the dialog opens without a labels layer chosen
    assert plugin.audit_parameters() == {"INPUT": naip_layer}


def test_find_objects_action_uses_the_scene_and_the_search_text(plugin, iface, naip_layer):
    """Toolbar/menu 'Find objects by text...': the current scene and the search box's text prefill the dialog."""
    assert "Find objects by text..." in [a.text() for a in plugin.actions]
    plugin.query_box.setText("  storage tanks ")
    assert plugin.find_objects_parameters() == {"INPUT": naip_layer, "QUERY": "storage tanks"}
    plugin.query_box.setText("")
    assert plugin.find_objects_parameters() == {"INPUT": naip_layer}
