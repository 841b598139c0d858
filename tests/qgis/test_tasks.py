"""Classify / count / heatmap / index through the plugin's own tasks and dialogs, on a real scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.qgis.helpers import run_task


def _group_layers(project, name):
    from qgis.core import QgsLayerTreeGroup

    groups = [g for g in project.layerTreeRoot().children() if isinstance(g, QgsLayerTreeGroup)]
    assert [g.name() for g in groups] == [name]
    return [node.layer() for node in groups[0].findLayers()]


def test_classify_dialog_to_categorized_layer(scene_layer, project, plugin_settings):
    from qgis.core import QgsCategorizedSymbolRenderer, QgsVectorLayer

    from qgis_plugin.tasks import ClassifyTask
    from qgis_plugin.ui.classify_dialog import ClassifyDialog

    dialog = ClassifyDialog(layer=scene_layer, settings=plugin_settings)
    dialog.labels.setText("red, green, blue")
    dialog.top_k.setValue(2)
    ok, result = run_task(ClassifyTask(dialog.params()))
    assert ok, result.message
    (layer,) = _group_layers(project, "Classify tiles: red, green, blue (rgbn)")
    assert isinstance(layer, QgsVectorLayer) and layer.crs() == scene_layer.crs()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "label"
    assert [c.value() for c in renderer.categories()] == ["red", "green", "blue"]  # the legend, in label order
    legend = [item.label() for item in renderer.legendSymbolItems()]
    assert legend == ["red", "green", "blue"]
    n_tiles = -(-515 // 32) * -(-403 // 32)
    assert 0 < layer.featureCount() <= n_tiles
    labels = [f["label"] for f in layer.getFeatures()]
    assert set(labels) <= {"red", "green", "blue"}
    assert {"score", "label_1", "score_2", "valid_frac"} <= set(layer.fields().names())
    assert scene_layer.extent().contains(layer.extent())
    assert sum(result.info["counts"].values()) == layer.featureCount()


def test_count_to_graduated_layer(scene_layer, project, plugin_settings):
    from qgis.core import QgsGraduatedSymbolRenderer

    from qgis_plugin.tasks import CountTask
    from qgis_plugin.ui.count_dialog import CountDialog

    dialog = CountDialog(layer=scene_layer, settings=plugin_settings)
    dialog.object_name.setText("green field")
    dialog.max_count.setValue(5)
    ok, result = run_task(CountTask(dialog.params()))
    assert ok, result.message
    (layer,) = _group_layers(project, "Count: green field (rgbn)")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "count"
    assert [r.label() for r in renderer.ranges()] == ["1", "2", "3", "4", "5"]
    counts = np.array([f["count"] for f in layer.getFeatures()])
    probs = np.array([f["probability"] for f in layer.getFeatures()])
    assert len(counts) == layer.featureCount() > 0
    assert counts.min() >= 1 and counts.max() <= 5 and np.all((probs > 0) & (probs <= 1))
    assert result.info["total"] == counts.sum()
    assert layer.crs() == scene_layer.crs() and scene_layer.extent().contains(layer.extent())


def test_heatmap_to_pseudocolor_raster_on_the_scene_extent(scene_layer, project, plugin_settings):
    from qgis.core import QgsRasterLayer, QgsSingleBandPseudoColorRenderer

    from qgis_plugin.tasks import HeatmapTask
    from qgis_plugin.ui.heatmap_dialog import HeatmapDialog

    dialog = HeatmapDialog(layer=scene_layer, settings=plugin_settings)
    dialog.query.setText("red")
    dialog.windows.setText("320, 640")
    params = dialog.params()
    assert params.scales_m == (320.0, 640.0)
    ok, result = run_task(HeatmapTask(params))
    assert ok, result.message
    (layer,) = _group_layers(project, "Heatmap: 'red' (rgbn)")
    assert isinstance(layer, QgsRasterLayer) and layer.crs() == scene_layer.crs()
    ext, scene = layer.extent(), scene_layer.extent()
    for a, b in ((ext.xMinimum(), scene.xMinimum()), (ext.xMaximum(), scene.xMaximum()),
                 (ext.yMinimum(), scene.yMinimum()), (ext.yMaximum(), scene.yMaximum())):
        assert a == pytest.approx(b, abs=1e-6)
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200  # low scores are transparent
    stats = layer.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue < stats.maximumValue <= 1.0


def test_index_task_writes_the_sidecar(scene_layer, project, plugin_settings, scene_path):
    from qgis_plugin.tasks import IndexTask
    from qgis_plugin.ui.index_dialog import IndexDialog

    dialog = IndexDialog(layer=scene_layer, settings=plugin_settings)
    ok, result = run_task(IndexTask(dialog.params()))
    assert ok, result.message
    index = Path(result.outputs["index"])
    assert index == scene_path.with_name(scene_path.name + ".rsclip-index.parquet")
    assert index.is_file() and result.info["n_tiles"] > 0
    assert result.layers == [] and not project.layerTreeRoot().children()[1:]


def test_cancel_during_run_returns_false_and_adds_nothing(scene_layer, project, plugin_settings):
    from qgis_plugin.sources import run_params
    from qgis_plugin.runs import ClassifyParams
    from qgis_plugin.tasks import ClassifyTask

    task = ClassifyTask(run_params(ClassifyParams, scene_layer, plugin_settings, labels="red,green"))
    seen = []

    def cancel_on_first_progress(value):
        seen.append(value)
        task.cancel()
    task.progressChanged.connect(cancel_on_first_progress)
    ok, result = run_task(task)
    assert seen and ok is False
    assert result.canceled and not result.ok and result.layers == []
    assert len(project.mapLayers()) == 1  # only the scene
    assert not (plugin_settings.runs_folder()).exists() or not any(plugin_settings.runs_folder().iterdir())


def test_core_error_becomes_a_failed_result_with_its_message(scene_layer, project, plugin_settings, tmp_path):
    from qgis_plugin.sources import run_params
    from qgis_plugin.runs import ClassifyParams
    from qgis_plugin.tasks import ClassifyTask

    missing = tmp_path / "no_such_labels.txt"
    task = ClassifyTask(run_params(ClassifyParams, scene_layer, plugin_settings, labels_file=str(missing)))
    ok, result = run_task(task)
    assert ok is False and not result.canceled
    assert result.message == f"{missing}: labels file does not exist"
    bad_bands = run_params(ClassifyParams, scene_layer, plugin_settings, labels="red")
    bad_bands.bands = (1, 2, 9)
    ok, result = run_task(ClassifyTask(bad_bands))
    assert ok is False and "band 9 does not exist" in result.message
    assert len(project.mapLayers()) == 1


def test_non_file_rasters_are_refused_clearly(project, tmp_path):
    from osgeo import gdal
    from qgis.core import QgsRasterLayer

    from qgis_plugin.sources import FILE_ONLY, LayerSourceError, raster_file

    xyz = QgsRasterLayer("type=xyz&url=https://tile.openstreetmap.org/{z}/{x}/{y}.png", "OSM", "wms")
    gdal.Translate("/vsimem/rsclip_test.tif", gdal.Open(str(_tiny_tif(tmp_path))))
    mem = QgsRasterLayer("/vsimem/rsclip_test.tif", "in memory", "gdal")
    assert mem.isValid()
    for layer, why in ((xyz, "'wms' provider"), (mem, "not a local file")):
        with pytest.raises(LayerSourceError) as err:
            raster_file(layer)
        assert str(err.value).startswith(FILE_ONLY) and why in str(err.value) and layer.name() in str(err.value)
    gdal.Unlink("/vsimem/rsclip_test.tif")
    with pytest.raises(LayerSourceError, match="select a raster layer"):
        raster_file(None)


def _tiny_tif(folder):
    from tests.utils.rasters import write_geotiff

    return write_geotiff(folder / "tiny.tif", np.full((3, 8, 8), 100, np.uint8))


def test_dialogs_validate_before_running(scene_layer, plugin_settings):
    from qgis_plugin.ui.classify_dialog import ClassifyDialog
    from qgis_plugin.ui.count_dialog import CountDialog
    from qgis_plugin.ui.heatmap_dialog import HeatmapDialog

    classify = ClassifyDialog(layer=scene_layer, settings=plugin_settings)
    with pytest.raises(ValueError, match="type labels or choose a labels file"):
        classify.params()
    count = CountDialog(layer=scene_layer, settings=plugin_settings)
    with pytest.raises(ValueError, match="say what to count"):
        count.params()
    heat = HeatmapDialog(layer=scene_layer, settings=plugin_settings)
    heat.query.setText("a road")
    heat.windows.setText("200, big")
    with pytest.raises(ValueError, match="window sizes must be numbers"):
        heat.params()


def test_settings_dialog_round_trip(qgis_app, tmp_path):
    from qgis_plugin.settings import Settings
    from qgis_plugin.ui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(settings=Settings())
    dialog.source_buttons.button(1).setChecked(True)
    dialog.folder.setFilePath(str(tmp_path))
    dialog.device.setCurrentText("cpu")
    dialog.batch.setValue(8)
    dialog.tile.setValue(500.0)
    assert dialog.rotations.currentText().startswith("1:")
    dialog.rotations.setCurrentIndex(2)
    dialog.accept()
    loaded = Settings.load()
    assert (loaded.model_source, loaded.model(), loaded.device, loaded.batch_size, loaded.tile_size_m,
            loaded.rotations) == ("folder", str(tmp_path), "cpu", 8, 500.0, 4)
    assert SettingsDialog(settings=loaded).rotations.currentText().startswith("4:")
    loaded.rotations = 3  # a hand-edited value the core does not take: back to the plain run
    assert loaded.checked().rotations == 1
