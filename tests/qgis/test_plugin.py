"""The plugin loads through classFactory, builds its toolbar, and its text search adds real layers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.qgis.helpers import run_task


@pytest.fixture
def plugin(iface, plugin_settings):
    import qgis_plugin
    from qgis_plugin.plugin import RsclipGeoPlugin

    p = qgis_plugin.classFactory(iface)
    assert isinstance(p, RsclipGeoPlugin), "dependencies are all installed here: the real plugin must load"
    p.initGui()
    yield p
    p.unload()


def test_toolbar_menu_and_provider(plugin, iface):
    from qgis.core import QgsApplication
    from qgis.PyQt.QtWidgets import QLineEdit, QToolBar

    toolbars = [t for t in iface.mainWindow().findChildren(QToolBar) if t.objectName() == "rsclipGeoToolbar"]
    assert len(toolbars) == 1
    toolbar = toolbars[0]
    boxes = toolbar.findChildren(QLineEdit, "rsclipGeoQuery")
    assert len(boxes) == 1 and "Search map by text" in boxes[0].placeholderText()
    texts = [a.text() for a in toolbar.actions()]
    assert "Search map by text" in texts
    assert {"Classify tiles...", "Localization heatmap...", "Count objects..."} <= set(texts)
    menu = [a.text() for a in iface.raster_menu_actions("&rsclip-geo")]
    assert menu == ["Search map by text", "Classify tiles...", "Localization heatmap...", "Count objects...",
                    "Build index...", "Find objects by text...", "Audit labels...", "rsclip-geo panel", "Settings...", "Check / repair dependencies...",
                    "Diagnostics"]
    assert iface.menu_actions("&rsclip-geo") == []  # under Raster (the metadata's category), not Plugins
    assert all(not a.icon().pixmap(16, 16).isNull() for a in toolbar.actions() if a.text())  # all with an icon
    provider = QgsApplication.processingRegistry().providerById("rsclipgeo")
    assert provider is not None
    assert sorted(a.name() for a in provider.algorithms()) == [
        "auditlabels", "buildindex", "classifytiles", "countobjects", "findobjects", "localizationheatmap",
        "searchbytext"]


def test_unload_removes_everything(iface, plugin_settings):
    import qgis_plugin
    from qgis.core import QgsApplication

    p = qgis_plugin.classFactory(iface)
    p.initGui()
    p.unload()
    assert iface.raster_menu_actions("&rsclip-geo") == []
    assert QgsApplication.processingRegistry().providerById("rsclipgeo") is None


def test_search_from_the_toolbar_adds_ranked_hits_and_scores(plugin, scene_layer, project, iface):
    from qgis.core import (QgsLayerTreeGroup, QgsRasterLayer, QgsSingleBandPseudoColorRenderer,
                           QgsSingleSymbolRenderer, QgsVectorLayer)

    from qgis_plugin.tasks import SearchTask

    iface.setActiveLayer(scene_layer)
    plugin.query_box.setText("green")
    params = plugin.search_params()
    assert params.scene == scene_layer.source() and params.bands == (1, 2, 3)  # the bands on screen
    task = SearchTask(params, on_done=plugin.done)
    ok, result = run_task(task)
    assert ok and result.ok, result.message

    groups = [g for g in project.layerTreeRoot().children() if isinstance(g, QgsLayerTreeGroup)]
    assert [g.name() for g in groups] == ["Search: 'green' (rgbn)"]
    layers = {node.layer().name(): node.layer() for node in groups[0].findLayers()}
    assert set(layers) == {"hits: green", "tile scores"}  # the layer names carry the query
    hits, scores = layers["hits: green"], layers["tile scores"]
    assert isinstance(hits, QgsVectorLayer) and isinstance(scores, QgsRasterLayer)
    for layer in (hits, scores):
        assert layer.crs() == scene_layer.crs() and layer.crs().authid() == "EPSG:32618"

    # ranked, labelled hits inside the scene, best first
    assert hits.featureCount() == 5
    assert isinstance(hits.renderer(), QgsSingleSymbolRenderer) and hits.labelsEnabled()
    feats = sorted(hits.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in feats] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(feats, feats[1:]))
    scene_extent = scene_layer.extent()
    for f in feats:
        assert scene_extent.contains(f.geometry().boundingBox())

    # every tile's score on the scene's own grid: same pixels, same extent (never hanging past the scene)
    assert isinstance(scores.renderer(), QgsSingleBandPseudoColorRenderer)
    assert (scores.width(), scores.height()) == (scene_layer.width(), scene_layer.height()) == (515, 403)
    assert scores.extent() == scene_extent
    # the best hit's score is the maximum of the score raster
    stats = scores.dataProvider().bandStatistics(1)
    assert stats.maximumValue == pytest.approx(feats[0]["score"], abs=1e-5)

    # the plugin reported success, and our outputs are never taken as the next scene
    assert plugin.last_result is result
    iface.setActiveLayer(scores)
    assert plugin.current_raster() is scene_layer


def test_search_runs_in_a_background_task(plugin, scene_layer, project, iface):
    """The real path: the toolbar search goes to QGIS's task manager (a worker thread)."""
    from qgis.core import QgsApplication

    iface.setActiveLayer(scene_layer)
    plugin.query_box.setText("blue")
    task = plugin.search()
    assert task is not None
    deadline = time.time() + 60
    while plugin.last_result is None and time.time() < deadline:  # finished() arrives through the event loop
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert plugin.last_result is not None, "the task did not finish within 60 s"
    assert not plugin.running  # the plugin let go of the finished task
    assert plugin.last_result.ok, plugin.last_result.message
    assert len(plugin.last_result.layers) == 2
    assert any("hits for 'blue'" in text for text, _ in iface.messages)
    assert iface.messages[0][0].startswith("Search: 'blue' (rgbn): running")
    assert not any("rsclip-geo" in text for text, _ in iface.messages)  # the bar's title says it once
    # the new group is open in the Layers panel
    view = iface.layerTreeView()
    group = project.layerTreeRoot().children()[0]
    assert group.isExpanded() and view.isExpanded(view.node2index(group))


def test_search_on_a_web_layer_says_file_based_only(plugin, project, iface):
    from qgis.core import QgsRasterLayer

    wms = QgsRasterLayer("type=xyz&url=https://tile.openstreetmap.org/{z}/{x}/{y}.png&zmax=19&zmin=0", "OSM", "wms")
    project.addMapLayer(wms)
    iface.setActiveLayer(wms)
    plugin.query_box.setText("a harbour")
    assert plugin.search() is None
    text, level = iface.messages[-1]
    assert "only file-based GDAL rasters are supported" in text and "'wms' provider" in text
    assert project.layerTreeRoot().children() and len(project.mapLayers()) == 1  # nothing added


def test_empty_query_is_a_message_not_a_task(plugin, scene_layer, iface):
    plugin.query_box.setText("   ")
    assert plugin.search() is None
    assert "type what to look for" in iface.messages[-1][0]


def test_default_model_search_if_shipped(plugin, scene_layer, project, iface, plugin_settings):
    """With the shipped default bundle (when this checkout has it), the same task path works."""
    from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

    from qgis_plugin.tasks import SearchTask

    if not (DEFAULT_MODEL_DIR / "model.json").is_file():
        pytest.skip("the shipped default model is not built in this checkout")
    plugin_settings.model_source = "default"
    plugin_settings.tile_size_m = 640.0  # few tiles: the real model is slower
    plugin_settings.save()
    iface.setActiveLayer(scene_layer)
    plugin.query_box.setText("a river")
    ok, result = run_task(SearchTask(plugin.search_params()))
    assert ok, result.message
    hits = project.mapLayer(result.layers[0])
    assert hits.featureCount() >= 1 and hits.crs() == scene_layer.crs()
    scores = np.array([f["score"] for f in hits.getFeatures()])
    assert np.all(np.isfinite(scores))


def test_diagnostics_come_from_both_sides(plugin):
    from qgis.core import QgsApplication

    plugin.show_diagnostics()
    deadline = time.time() + 60
    while not getattr(plugin, "last_diagnostics", None) and time.time() < deadline:
        QgsApplication.processEvents()
        time.sleep(0.02)
    text = plugin.last_diagnostics
    for key in ("QGIS: 3.", "GDAL (QGIS): ", "worker Python:", "rasterio: ", "onnxruntime: ", "providers:",
                "rsclip_geo core: ", "GPU: "):
        assert key in text, key


def test_missing_dependency_gives_the_installer_instead(iface, monkeypatch, qgis_app):
    import qgis_plugin
    from qgis_plugin import deps
    from qgis_plugin.installer_plugin import InstallerPlugin
    from qgis_plugin.ui.install_dialog import InstallDialog
    from qgis.PyQt.QtWidgets import QLabel

    missing = ("rsclip_missing_mod", "rsclip-missing-dist", "rsclip-missing-dist>=1.0")
    monkeypatch.setattr(deps, "REQUIREMENTS", deps.REQUIREMENTS + (missing,))
    p = qgis_plugin.classFactory(iface)
    assert isinstance(p, InstallerPlugin)
    p.initProcessing()  # qgis_process calls it: must not fail
    p.initGui()
    assert [a.text() for a in iface.raster_menu_actions("&rsclip-geo")] == ["Install rsclip-geo dependencies..."]
    assert "needs Python packages" in iface.messages[-1][0]
    dialog = InstallDialog(iface.mainWindow(), p.problems)
    text = dialog.findChildren(QLabel)[0].text()
    assert "rsclip-missing-dist>=1.0: not installed" in text and str(deps.deps_dir()) in text
    p.unload()
    assert iface.raster_menu_actions("&rsclip-geo") == []
