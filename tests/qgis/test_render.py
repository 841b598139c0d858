"""The scene and a run's layers render to a non-blank image (the map a user would see)."""

from __future__ import annotations

import numpy as np

from tests.qgis.helpers import run_task


def _render(layers, extent, path, size=(400, 320)):
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(*size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    assert image.save(str(path), "PNG")
    return image


def _pixels(image) -> np.ndarray:
    from qgis.PyQt.QtGui import QImage

    image = image.convertToFormat(QImage.Format_RGB32)
    ptr = image.constBits()
    ptr.setsize(image.height() * image.bytesPerLine())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return rows[:, :image.width(), :3].astype(np.float32)


def test_search_result_renders_over_the_scene(scene_layer, project, plugin_settings, tmp_path):
    from qgis_plugin.sources import run_params
    from qgis_plugin.runs import SearchParams
    from qgis_plugin.tasks import SearchTask

    ok, result = run_task(SearchTask(run_params(SearchParams, scene_layer, plugin_settings, query="green", top=5)))
    assert ok, result.message
    hits, scores = (project.mapLayer(i) for i in result.layers)
    scene_only = _pixels(_render([scene_layer], scene_layer.extent(), tmp_path / "scene.png"))
    with_results = _pixels(_render([hits, scores, scene_layer], scene_layer.extent(), tmp_path / "map.png"))
    assert scene_only.std() > 10 and with_results.std() > 10  # not blank
    # the result layers change the picture (hit outlines, score colours), but not everywhere: the
    # transparent low scores let the scene through
    changed = np.abs(with_results - scene_only).max(axis=2) > 30
    assert 0.01 < changed.mean() < 0.95
    assert (tmp_path / "map.png").stat().st_size > 10_000
