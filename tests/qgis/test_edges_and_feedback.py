"""Issue 14 in QGIS: outputs on the scene's grid, the whole scene analysed, and the task's feedback.

The NAIP demo scene (934 x 723 px of 5 m) with 640 m (128 px) tiles is 7.3 x 5.6 tiles: before, the tile
scores raster hung 225 m past the southern edge and the east column was never labelled.
"""

from __future__ import annotations

import gc
import shutil
import warnings

import pytest

from tests.qgis.helpers import run_task


@pytest.fixture
def naip_layer(project, shared_data, tmp_path):
    from qgis.core import QgsRasterLayer

    src = shared_data / "scenes" / "naip_2020_rgbn_5m.tif"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    layer = QgsRasterLayer(str(shutil.copy(src, tmp_path / "naip.tif")), "naip", "gdal")
    assert layer.isValid() and (layer.width(), layer.height()) == (934, 723)
    project.addMapLayer(layer)
    return layer


@pytest.fixture
def settings_640m(plugin_settings):
    plugin_settings.tile_size_m = 640.0
    plugin_settings.save()
    return plugin_settings


def _params(cls, layer, settings, **extra):
    from qgis_plugin.sources import run_params

    return run_params(cls, layer, settings, **extra)


def test_search_scores_lie_on_the_scene_grid_and_progress_moves(naip_layer, project, settings_640m):
    from qgis_plugin.runs import SearchParams
    from qgis_plugin.tasks import SearchTask

    for attempt in ("index built", "index reused"):
        task = SearchTask(_params(SearchParams, naip_layer, settings_640m, query="a field", top=3))
        assert task.progress() == 0.0  # QgsTask's own getter, not hidden by the plugin
        seen = []
        task.progressChanged.connect(seen.append)
        ok, result = run_task(task)
        assert ok, result.message
        inside = [p for p in seen if 0 < p < 100]
        assert len(set(inside)) >= 3, (attempt, seen)  # moves during the run, not 0 then 100
        assert seen == sorted(seen) and seen[-1] == 100.0 and task.progress() == 100.0
    scores = project.mapLayer(result.layers[1])
    assert scores.name() == "tile scores"
    assert scores.extent() == naip_layer.extent()  # was 485899,5205406 - 491019,5209246
    assert (scores.width(), scores.height()) == (934, 723)
    assert scores.rasterUnitsPerPixelX() == naip_layer.rasterUnitsPerPixelX() == 5.0
    stats = scores.dataProvider().bandStatistics(1)
    assert stats.elementCount > 0.99 * 934 * 723  # scored up to the east and south edges


def test_classify_labels_the_east_strip(naip_layer, project, settings_640m):
    from qgis_plugin.runs import ClassifyParams
    from qgis_plugin.tasks import ClassifyTask

    ok, result = run_task(ClassifyTask(_params(ClassifyParams, naip_layer, settings_640m, labels="red,green")))
    assert ok, result.message
    layer = project.mapLayer(result.layers[0])
    assert sorted({f["col"] for f in layer.getFeatures()}) == list(range(8))  # was 0-6
    assert layer.featureCount() == 48 and "48 tiles labelled, 0 skipped" in result.message
    assert layer.extent() == naip_layer.extent()


def test_processing_edge_option_and_why_tiles_were_skipped(naip_layer, tiny_bundle, tmp_path):
    import processing
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsVectorLayer

    from qgis_plugin.processing.provider import RsclipProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("rsclipgeo") is None:
        registry.addProvider(RsclipProvider())
    common = {"INPUT": naip_layer, "TILE_SIZE": 640.0, "MODEL": str(tiny_bundle), "DEVICE": 1, "LABELS": "red,green"}
    feedback = QgsProcessingFeedback()
    res = processing.run("rsclipgeo:classifytiles", {**common, "OUTPUT": str(tmp_path / "a.gpkg")},
                         feedback=feedback)
    assert QgsVectorLayer(res["OUTPUT"], "a", "ogr").featureCount() == 48  # default: shift, whole scene
    assert "48 tiles labelled, 0 skipped" in feedback.textLog()
    feedback = QgsProcessingFeedback()
    res = processing.run("rsclipgeo:classifytiles", {**common, "EDGE": 1, "OUTPUT": str(tmp_path / "b.gpkg")},
                         feedback=feedback)  # 1: pad
    assert QgsVectorLayer(res["OUTPUT"], "b", "ogr").featureCount() == 42
    assert "6 skipped (6 mostly outside the scene with edge 'pad')" in feedback.textLog()
    alg = registry.algorithmById("rsclipgeo:searchbytext")
    edge = alg.parameterDefinition("EDGE")
    assert edge is not None and edge.options()[edge.defaultValue()].startswith("shift")
    registry.removeProvider("rsclipgeo")


def test_plugin_rotations_are_the_core_s():
    from rsclip_geo.runtime.encoder import ROTATIONS as CORE_ROTATIONS

    from qgis_plugin.settings import ROTATION_TITLES, ROTATIONS

    assert ROTATIONS == CORE_ROTATIONS == tuple(ROTATION_TITLES) and ROTATIONS[0] == 1


def test_plugin_edge_list_is_the_core_s():
    from rsclip_geo.raster.tiling import EDGE_POLICIES, TileSpec

    from qgis_plugin.runs import RunParams
    from qgis_plugin.settings import EDGE_TITLES, EDGES

    assert set(EDGES) == set(EDGE_POLICIES) == set(EDGE_TITLES) and EDGES[0] == TileSpec().edge
    assert RunParams().edge == EDGES[0] and RunParams(tile_size_px=32).tile().edge == "shift"


def test_groups_open_and_older_ones_fold(naip_layer, project, settings_640m, iface):
    from qgis.core import QgsLayerTreeModel
    from qgis.gui import QgsLayerTreeView

    from qgis_plugin.runs import ClassifyParams
    from qgis_plugin.tasks import ClassifyTask

    view = QgsLayerTreeView(iface.mainWindow())
    view.setModel(QgsLayerTreeModel(project.layerTreeRoot(), view))
    groups = []
    for labels in ("red,green", "blue,green"):
        task = ClassifyTask(_params(ClassifyParams, naip_layer, settings_640m, labels=labels))
        task.layer_tree_view = view
        ok, result = run_task(task)
        assert ok, result.message
        groups.insert(0, project.layerTreeRoot().children()[0])
    newest, older = groups
    assert newest.isExpanded() and view.isExpanded(view.node2index(newest))
    assert all(node.isExpanded() for node in newest.findLayers())
    assert not older.isExpanded() and not view.isExpanded(view.node2index(older))


def test_scores_legend_is_one_labelled_bar(naip_layer, project, tmp_path):
    from osgeo import gdal
    from qgis.core import QgsColorRampLegendNode, QgsLayerTree, QgsLayerTreeModel, QgsRasterLayer
    from qgis.PyQt import sip
    from qgis.PyQt.QtCore import Qt

    from qgis_plugin.layers import style_scores

    path = str(tmp_path / "s.tif")
    gdal.Translate(path, naip_layer.source(), bandList=[1], outputType=gdal.GDT_Float32, scaleParams=[[0, 255, 0, 1]])
    layer = QgsRasterLayer(path, "scores", "gdal")
    style_scores(layer)
    root = QgsLayerTree()
    model = QgsLayerTreeModel(root)  # owns the legend nodes
    nodes = model.layerLegendNodes(root.addLayer(layer))
    ramps = [n for n in nodes if isinstance(n, QgsColorRampLegendNode)]
    assert len(ramps) == 1  # one bar, no rows of colours without numbers
    others = [n.data(Qt.DisplayRole) for n in nodes if n is not ramps[0]]
    assert len(others) <= 1 and all(others)  # at most the band's name
    settings = ramps[0].settings()
    assert settings.minimumLabel().endswith("(lower: not drawn)") and settings.maximumLabel().endswith("(best)")
    shader = layer.renderer().shader().rasterShaderFunction()
    assert float(settings.minimumLabel().split()[0]) == pytest.approx(shader.minimumValue(), abs=1e-3)
    items = shader.colorRampItemList()
    assert items[0].color.alpha() == 0 and all(item.label for item in items)
    del nodes, ramps, settings
    sip.delete(model)  # the model before its tree: Python would free them in any order


def test_installer_leaves_no_open_file(tmp_path):
    from qgis_plugin import installer
    from tests.qgis.test_deps import _wheel

    wheels = _wheel(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = installer.install(tmp_path / "deps" / "py3x", requirements=["rsclip-dummy-dep==1.0"], wheelhouse=wheels)
        gc.collect()
    assert rc == 0
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_processing_sizes_are_metres_in_a_geographic_crs(project, naip_layer, tiny_bundle, tmp_path):
    """A 640 m tile on the NAIP scene warped to EPSG:4326 (was: 640 map units = 640 degrees, an error)."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer

    from qgis_plugin.processing.provider import RsclipProvider

    geo = str(tmp_path / "naip_4326.tif")
    gdal.Warp(geo, naip_layer.source(), dstSRS="EPSG:4326")
    layer = QgsRasterLayer(geo, "naip 4326", "gdal")
    assert layer.isValid() and layer.crs().isGeographic()
    project.addMapLayer(layer)
    registry = QgsApplication.processingRegistry()
    if registry.providerById("rsclipgeo") is None:
        registry.addProvider(RsclipProvider())
    res = processing.run("rsclipgeo:classifytiles", {"INPUT": layer, "TILE_SIZE": 640.0, "MODEL": str(tiny_bundle),
                                                     "DEVICE": 1, "LABELS": "red,green",
                                                     "OUTPUT": str(tmp_path / "geo.gpkg")})
    n = QgsVectorLayer(res["OUTPUT"], "geo", "ogr").featureCount()
    assert 40 <= n <= 60  # about the 48 tiles of 640 m of the projected scene
    res = processing.run("rsclipgeo:localizationheatmap", {"INPUT": layer, "WINDOWS": "640,1280", "QUERY": "green",
                                                           "MODEL": str(tiny_bundle), "DEVICE": 1,
                                                           "OUTPUT": str(tmp_path / "heat.tif")})
    heat = QgsRasterLayer(res["OUTPUT"], "heat", "gdal")
    assert heat.isValid() and heat.extent() == layer.extent()
    registry.removeProvider("rsclipgeo")


def test_standout_keeps_only_hits_well_above_the_scene_mean(naip_layer, project, settings_640m):
    import numpy as np
    import pandas as pd

    from qgis_plugin.runs import SearchParams, standing_out
    from qgis_plugin.tasks import SearchTask

    scores = np.array([0.1, 0.2, 0.2, 0.3, 0.9], np.float32)  # mean 0.34, sd 0.28
    hits = pd.DataFrame({"rank": [1, 2, 3], "score": [0.9, 0.3, 0.2]})
    kept, dropped = standing_out(hits, scores, 1.5)
    assert list(kept["rank"]) == [1] and dropped == 2
    assert standing_out(hits, scores, 0.0)[1] == 0  # off: the top N as before
    assert standing_out(hits, np.full(5, 0.2, np.float32), 0.5)[1] == 3  # all equal: nothing stands out

    settings_640m.standout, settings_640m.top = 1.0, 48
    task = SearchTask(_params(SearchParams, naip_layer, settings_640m, query="green", top=48))
    assert task.params.standout == 1.0
    ok, result = run_task(task)
    assert ok, result.message
    n = result.info["n_hits"]
    assert 0 < n < 48 and f"{48 - n} of the top 48 did not stand out by 1 sd" in result.message
    assert project.mapLayer(result.layers[0]).featureCount() == n
