"""QGIS --code startup script for `CODE=scripts/qgis_panel_screenshot.py scripts/qgis_screenshot.sh docs/qgis_panel.png`:
load the demo scene, fill the rsclip-geo panel as a user would (model, 800 m tiles: 160 px at 5 m, labels), press its
Classify tiles button (a background task), and save a screenshot of the QGIS window with the panel and the
labelled tiles once the result is on the map.

Environment: RSCLIP_SHOT_SCENE, RSCLIP_SHOT_MODEL (bundle folder, empty: shipped default), RSCLIP_SHOT_OUT (png),
RSCLIP_SHOT_LABELS (comma-separated), RSCLIP_SHOT_QUERY (the panel's text box).
"""

import os
import traceback

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

OUT = os.environ["RSCLIP_SHOT_OUT"]
LOG = OUT + ".log"


def log(text):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(text + "\n")


def quit_qgis(code=0):
    QgsProject.instance().setDirty(False)
    os._exit(code)  # no "save project?" dialog, no shutdown surprises under Xvfb


def start():
    try:
        plugin = plugins.get("rsclip_geo_qgis")
        log(f"rsclip-geo: {type(plugin).__name__}")
        if plugin is None or getattr(plugin, "panel", None) is None:
            log("the rsclip-geo plugin (with its panel) did not load")
            quit_qgis(2)
        window = iface.mainWindow()
        window.resize(1600, 1000)  # Xvfb has no window manager to maximise it
        for dock in window.findChildren(QDockWidget):
            if dock.objectName() in ("Browser", "Browser2", "BrowserDock"):
                dock.hide()
        layer = QgsRasterLayer(os.environ["RSCLIP_SHOT_SCENE"], "NAIP 2020 (demo scene)", "gdal")
        QgsProject.instance().addMapLayer(layer)
        iface.setActiveLayer(layer)
        iface.mapCanvas().setExtent(layer.extent())
        panel = plugin.panel
        panel.show()
        window.resizeDocks([panel], [400], Qt.Horizontal)
        model = os.environ.get("RSCLIP_SHOT_MODEL", "")
        if model:
            panel.model.setCurrentIndex(panel.model.findData("folder|"))
            panel.folder.setFilePath(model)
        else:
            panel.model.setCurrentIndex(panel.model.findData("default|"))
        panel.layer.setLayer(layer)
        panel.tile.setValue(800)
        panel.area.setCurrentText("Whole layer")
        panel.text.setText(os.environ.get("RSCLIP_SHOT_QUERY", "green fields"))
        panel.labels.setText(os.environ.get("RSCLIP_SHOT_LABELS", "farmland, meadow, bare land, lake, forest, residential area"))
        panel.buttons["classify"].click()  # exactly what pressing "Classify tiles" in the panel does
        wait_for(plugin, 0)
    except Exception:
        log(traceback.format_exc())
        quit_qgis(3)


def wait_for(plugin, tries):
    if plugin.last_result is None and tries < 600:
        QTimer.singleShot(200, lambda: wait_for(plugin, tries + 1))
        return
    result = plugin.last_result
    log(f"result: ok={getattr(result, 'ok', None)} {getattr(result, 'message', 'timed out')}")
    root = QgsProject.instance().layerTreeRoot()
    view = iface.layerTreeView()
    for node in root.children():  # the run's group open, the scene's band legend closed
        node.setExpanded(isinstance(node, QgsLayerTreeGroup))
        index = view.node2index(node) if hasattr(view, "node2index") else view.layerTreeModel().node2index(node)
        view.setExpanded(index, isinstance(node, QgsLayerTreeGroup))
    window = iface.mainWindow()
    layers_dock = [d for d in window.findChildren(QDockWidget) if d.objectName() == "Layers"]
    window.resizeDocks(layers_dock, [300], Qt.Horizontal)
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(4000, lambda: shoot(0 if result is not None and result.ok else 4))


def shoot(code):
    iface.mainWindow().grab().save(OUT, "PNG")
    log(f"saved {OUT}")
    quit_qgis(code)


QTimer.singleShot(3000, start)
