"""QGIS --code startup script for scripts/qgis_screenshot.sh: load the demo scene, run one rsclip-geo action as
the user would (a background task), save a screenshot of the QGIS window once the result layers are on the map,
and quit. Two pictures, chosen by RSCLIP_SHOT_MODE:

- ``search`` (default): type the query into the toolbar's text box and press "Search map by text".
- ``panel``: fill the rsclip-geo dock panel (model, 800 m tiles: 160 px at 5 m, labels) and press Classify tiles.

Environment: RSCLIP_SHOT_SCENE, RSCLIP_SHOT_MODEL (bundle folder, empty: shipped default), RSCLIP_SHOT_OUT (png),
RSCLIP_SHOT_QUERY, RSCLIP_SHOT_TILE_M (search), RSCLIP_SHOT_LABELS (panel), RSCLIP_SHOT_MODE.
"""

import os
import sys
import traceback

from qgis.core import QgsLayerTreeGroup, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QDockWidget
from qgis.utils import iface, plugins

OUT = os.environ["RSCLIP_SHOT_OUT"]
LOG = OUT + ".log"
MODE = os.environ.get("RSCLIP_SHOT_MODE", "search")
MODEL = os.environ.get("RSCLIP_SHOT_MODEL", "")
QUERY = os.environ.get("RSCLIP_SHOT_QUERY", "green fields")


def log(text):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(text + "\n")


def quit_qgis(code=0):
    QgsProject.instance().setDirty(False)
    os._exit(code)  # no "save project?" dialog, no shutdown surprises under Xvfb


def run_search(plugin, layer, window):
    """The toolbar: the model and tile size from the plugin's settings, the query in its text box."""
    settings_mod = sys.modules[type(plugin).__module__.rsplit(".", 1)[0] + ".settings"]
    settings_mod.Settings(model_source="folder" if MODEL else "default", model_folder=MODEL, device="cpu",
                          batch_size=32, tile_size_m=float(os.environ.get("RSCLIP_SHOT_TILE_M", "160")),
                          top=10).save()
    plugin.query_box.setText(QUERY)
    plugin.search_action.trigger()  # exactly what clicking "Search map by text" does


def run_panel(plugin, layer, window):
    """The dock panel, filled field by field, then its Classify tiles button."""
    panel = plugin.panel
    panel.show()
    window.resizeDocks([panel], [400], Qt.Horizontal)
    panel.model.setCurrentIndex(panel.model.findData("folder|" if MODEL else "default|"))
    if MODEL:
        panel.folder.setFilePath(MODEL)
    panel.layer.setLayer(layer)
    panel.tile.setValue(800)
    panel.area.setCurrentText("Whole layer")
    panel.text.setText(QUERY)
    panel.labels.setText(os.environ.get("RSCLIP_SHOT_LABELS",
                                        "farmland, meadow, bare land, lake, forest, residential area"))
    panel.buttons["classify"].click()  # exactly what pressing "Classify tiles" in the panel does


MODES = {"search": (run_search, "query_box", 360), "panel": (run_panel, "panel", 300)}


def start():
    try:
        run, needs, _ = MODES[MODE]
        plugin = plugins.get("rsclip_geo_qgis")
        log(f"plugins loaded: {sorted(plugins)}; rsclip-geo: {type(plugin).__name__}; mode {MODE}")
        if plugin is None or getattr(plugin, needs, None) is None:
            log(f"the rsclip-geo plugin did not load (or only its dependency installer did): no {needs}")
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
        run(plugin, layer, window)
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
    window.resizeDocks(layers_dock, [MODES[MODE][2]], Qt.Horizontal)
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(4000, lambda: shoot(0 if result is not None and result.ok else 4))


def shoot(code):
    iface.mainWindow().grab().save(OUT, "PNG")
    log(f"saved {OUT}")
    quit_qgis(code)


QTimer.singleShot(3000, start)
