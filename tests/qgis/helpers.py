"""Helpers for the headless QGIS tests: a real minimal iface and the task manager's two calls."""

from __future__ import annotations


class Iface:
    """The parts of QgisInterface the plugin uses, backed by real Qt/QGIS widgets (no mocks)."""

    def __init__(self):
        from qgis.gui import QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

        self._window = QMainWindow()
        central = QWidget(self._window)
        layout = QVBoxLayout(central)
        self._bar = QgsMessageBar(central)
        self._canvas = QgsMapCanvas(central)
        layout.addWidget(self._bar)
        layout.addWidget(self._canvas)
        self._window.setCentralWidget(central)
        self._menus = {}
        self._active = None
        self._view = None
        self.messages: list[tuple[str, int]] = []
        self._bar.widgetAdded.connect(self._record)

    def _record(self, widget):
        from qgis.gui import QgsMessageBarItem
        from qgis.PyQt import sip

        item = sip.cast(widget, QgsMessageBarItem)
        self.messages.append((item.text(), int(item.level())))

    def close(self):
        """Qt deletes the window and its toolbars (a garbage-collected QMainWindow holding toolbar
        actions crashes PyQt at exit)."""
        self._window.deleteLater()

    def mainWindow(self):
        return self._window

    def mapCanvas(self):
        return self._canvas

    def messageBar(self):
        return self._bar

    def layerTreeView(self):
        """A real layer tree view of the project's tree (what the Layers panel shows)."""
        if self._view is None:
            from qgis.core import QgsLayerTreeModel, QgsProject
            from qgis.gui import QgsLayerTreeView

            self._view = QgsLayerTreeView(self._window)
            self._view.setModel(QgsLayerTreeModel(QgsProject.instance().layerTreeRoot(), self._view))
        return self._view

    def addToolBar(self, name):
        return self._window.addToolBar(name)

    def addToolBarIcon(self, action):
        if not hasattr(self, "_plugins_toolbar"):
            self._plugins_toolbar = self._window.addToolBar("Plugins")
        self._plugins_toolbar.addAction(action)

    def removeToolBarIcon(self, action):
        if hasattr(self, "_plugins_toolbar"):
            self._plugins_toolbar.removeAction(action)

    def addPluginToRasterMenu(self, name, action):
        """Raster > name (what the real QgisInterface does for category=Raster plugins)."""
        if not hasattr(self, "_raster"):
            self._raster = self._window.menuBar().addMenu("&Raster")
            self._raster_menus = {}
        if name not in self._raster_menus:
            self._raster_menus[name] = self._raster.addMenu(name)
        self._raster_menus[name].addAction(action)

    def removePluginRasterMenu(self, name, action):
        if name in getattr(self, "_raster_menus", {}):
            self._raster_menus[name].removeAction(action)

    def raster_menu_actions(self, name):
        return self._raster_menus[name].actions() if name in getattr(self, "_raster_menus", {}) else []

    def addDockWidget(self, area, dock):
        self._window.addDockWidget(area, dock)

    def removeDockWidget(self, dock):
        self._window.removeDockWidget(dock)

    def addPluginToMenu(self, name, action):
        if name not in self._menus:
            self._menus[name] = self._window.menuBar().addMenu(name)
        self._menus[name].addAction(action)

    def removePluginMenu(self, name, action):
        if name in self._menus:
            self._menus[name].removeAction(action)

    def menu_actions(self, name):
        return self._menus[name].actions() if name in self._menus else []

    def activeLayer(self):
        return self._active

    def setActiveLayer(self, layer):
        self._active = layer
        return True


def run_task(task):
    """What the task manager does, in this thread: run() then finished(result)."""
    ok = task.run()
    task.finished(ok)
    return ok, task.result
