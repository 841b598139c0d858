"""The plugin in the QGIS window: a dock panel, a toolbar (text box + "Search map by text" and every action
with an icon), the menu under Raster > rsclip-geo, Processing.

Every action builds one parameters object from the chosen layer and the settings,
then hands it to a QgsTask; the GUI thread never runs the model.
"""

from __future__ import annotations

import re

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAction, QLineEdit, QMessageBox, QPushButton

from .icon import icon
from .layers import OUTPUT_PROPERTY
from .settings import Settings
from .sources import LayerSourceError, run_params
from .runs import SearchParams
from .tasks import TASKS, RunResult
from .ui.panel import RsclipPanel

MENU = "&rsclip-geo"
# errors that mean a package is missing or broken in the worker's Python: the installer can fix them
REPAIRABLE = re.compile(r"No module named|ModuleNotFoundError|ImportError|DLL load failed|cannot import name|"
                        r"undefined symbol")


def needs_repair(message: str) -> bool:
    return bool(REPAIRABLE.search(message or ""))


class RsclipGeoPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None
        self.query_box = None
        self.provider = None
        self.panel = None
        self.running: dict[int, object] = {}  # keep tasks referenced until they finish
        self.last_result: RunResult | None = None

    # ---- QGIS plugin interface ----
    def initProcessing(self) -> None:
        """Called by QGIS (metadata: hasProcessingProvider, e.g. for qgis_process) and by initGui: once."""
        from .processing.provider import RsclipProvider

        if self.provider is not None:
            return
        self.provider = RsclipProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        self.toolbar = self.iface.addToolBar("rsclip-geo")
        self.toolbar.setObjectName("rsclipGeoToolbar")
        self.query_box = QLineEdit(self.toolbar)
        self.query_box.setObjectName("rsclipGeoQuery")
        self.query_box.setPlaceholderText("Search map by text, e.g. a baseball field")
        self.query_box.setClearButtonEnabled(True)
        self.query_box.setMinimumWidth(240)
        self.query_box.returnPressed.connect(self.search)
        self.toolbar.addWidget(self.query_box)
        self.search_action = self._action("Search map by text", self.search, "search.svg")
        self._action("Classify tiles...", lambda: self.run_dialog("classify"), "rendererCategorizedSymbol.svg")
        self._action("Localization heatmap...", lambda: self.run_dialog("heatmap"), "rendererHeatmapSymbol.svg")
        self._action("Count objects...", lambda: self.run_dialog("count"), "rendererGraduatedSymbol.svg")
        self._action("Build index...", lambda: self.run_dialog("index"), "mIconTableLayer.svg")
        self._action("Find objects by text...", self.find_objects, "mActionAddPolygon.svg")
        self._action("Audit labels...", self.audit_active_layer, "mIconPolygonLayer.svg")
        self.panel = RsclipPanel(self.iface, self.start, self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.panel)
        panel_action = self.panel.toggleViewAction()
        panel_action.setText("rsclip-geo panel")
        panel_action.setIcon(icon())
        self._add(panel_action)
        self._action("Settings...", self.open_settings, "mActionOptions.svg")
        self._action("Check / repair dependencies...", self.check_dependencies, "mActionShowPluginManager.svg")
        self._action("Diagnostics", self.show_diagnostics, "mActionIdentify.svg")

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        if self.panel is not None:
            self.iface.removeDockWidget(self.panel)
            self.panel.deleteLater()
        if self.toolbar is not None:
            self.toolbar.deleteLater()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        self.actions, self.toolbar, self.provider, self.panel = [], None, None, None

    def _action(self, text: str, slot, theme_icon: str) -> QAction:
        """A menu entry (Raster > rsclip-geo, the metadata's category) and a toolbar button, with an icon."""
        action = QAction(QgsApplication.getThemeIcon("/" + theme_icon), text, self.iface.mainWindow())
        action.setObjectName("rsclipGeo" + "".join(w.capitalize() for w in text.strip(".").split()))
        action.triggered.connect(slot)
        return self._add(action)

    def _add(self, action: QAction) -> QAction:
        self.iface.addPluginToRasterMenu(MENU, action)
        self.toolbar.addAction(action)
        self.actions.append(action)
        return action

    # ---- which scene ----
    def current_raster(self) -> QgsMapLayer | None:
        """The active layer if it is a raster, else the topmost visible raster (never one of our outputs)."""
        active = self.iface.activeLayer()
        ours = active is not None and active.customProperty(OUTPUT_PROPERTY)
        if active is not None and active.type() == QgsMapLayer.RasterLayer and not ours:
            return active
        root = QgsProject.instance().layerTreeRoot()
        for node in root.findLayers():
            layer = node.layer()
            if isinstance(layer, QgsRasterLayer) and node.isVisible() and not layer.customProperty(OUTPUT_PROPERTY):
                return layer
        return active if isinstance(active, QgsRasterLayer) else None

    # ---- actions ----
    def audit_parameters(self) -> dict:
        """Processing parameters of 'Audit labels' for what the user has in front of them: the active layer as
        the land-cover polygons (when it is a polygon layer) over the current scene."""
        from qgis.core import QgsVectorLayer, QgsWkbTypes

        params: dict = {}
        active = self.iface.activeLayer()
        if isinstance(active, QgsVectorLayer) and active.geometryType() == QgsWkbTypes.PolygonGeometry:
            params["LABELS"] = active
        raster = self.current_raster()
        if raster is not None:
            params["INPUT"] = raster
        return params

    def find_objects_parameters(self) -> dict:
        """Processing parameters of 'Find objects by text' prefilled from the toolbar: the current scene and the
        text in the search box."""
        params: dict = {}
        raster = self.current_raster()
        if raster is not None:
            params["INPUT"] = raster
        text = self.query_box.text().strip() if self.query_box is not None else ""
        if text:
            params["QUERY"] = text
        return params

    def find_objects(self) -> None:
        """Open 'Find objects by text' (Processing dialog: objects as polygons; needs a model with a dense head)."""
        import processing

        processing.execAlgorithmDialog("rsclipgeo:findobjects", self.find_objects_parameters())

    def audit_active_layer(self) -> None:
        """Open 'Audit labels' (Processing dialog) on the active polygon layer over the current scene."""
        import processing

        params = self.audit_parameters()
        if "LABELS" not in params:
            self.iface.messageBar().pushMessage("rsclip-geo", "Audit labels: select a polygon layer with a label "
                                                "field in the Layers panel first", level=Qgis.Warning, duration=8)
        processing.execAlgorithmDialog("rsclipgeo:auditlabels", params)

    def search_params(self) -> SearchParams:
        """The search the toolbar describes; LayerSourceError / ValueError say what is missing."""
        text = self.query_box.text().strip() if self.query_box else ""
        if not text:
            raise ValueError("type what to look for in the box first, e.g. 'a baseball field'")
        settings = Settings.load()
        return run_params(SearchParams, self.current_raster(), settings, query=text, top=settings.top)

    def search(self) -> object | None:
        try:
            params = self.search_params()
        except (LayerSourceError, ValueError) as exc:
            self.message(str(exc), Qgis.Critical)
            return None
        return self.start("search", params)

    def run_dialog(self, action: str) -> object | None:
        from .ui.classify_dialog import ClassifyDialog
        from .ui.count_dialog import CountDialog
        from .ui.heatmap_dialog import HeatmapDialog
        from .ui.index_dialog import IndexDialog

        dialogs = {"classify": ClassifyDialog, "heatmap": HeatmapDialog, "count": CountDialog, "index": IndexDialog}
        dialog = dialogs[action](self.iface.mainWindow(), layer=self.current_raster())
        if not dialog.exec_():
            return None
        return self.start(action, dialog.params())

    def start(self, action: str, params) -> object:
        task = TASKS[action](params, on_done=self.done)
        task.layer_tree_view = self.layer_tree_view()
        self.running[id(task)] = task
        task.taskCompleted.connect(lambda: self.running.pop(id(task), None))
        task.taskTerminated.connect(lambda: self.running.pop(id(task), None))
        QgsApplication.taskManager().addTask(task)
        self.message(f"{task.result.group}: running (see the task bar to follow or cancel it)", Qgis.Info, 4)
        return task

    def layer_tree_view(self):
        view = getattr(self.iface, "layerTreeView", None)
        return view() if callable(view) else None

    def done(self, result: RunResult) -> None:
        """GUI thread, after the task's layers were added."""
        self.last_result = result
        if result.ok:
            self.message(result.message, Qgis.Success, 8)
        elif result.canceled:
            self.message(f"{result.group}: canceled", Qgis.Info, 4)
        elif needs_repair(result.message):
            self.offer_repair(f"{result.group}: {result.message}")
        else:
            self.message(f"{result.group}: {result.message}", Qgis.Critical, 0)

    def offer_repair(self, text: str) -> None:
        """An error from a missing or broken package: the message comes with the way back to the installer."""
        bar = self.iface.messageBar()
        item = bar.createMessage("rsclip-geo", text)
        button = QPushButton("Check / repair dependencies...", item)
        button.clicked.connect(self.check_dependencies)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Critical, 0)

    def check_dependencies(self) -> object:
        """Ask the worker process (which imports the packages for real) what is missing or broken, then show
        the installer with its answer: install what is missing, or reinstall to repair."""
        from .tasks import WorkerRequestTask

        def show(answer: dict) -> None:
            from .ui.install_dialog import InstallDialog

            result = answer.get("result") or {}
            problems = list(result.get("problems") or [])
            core = result.get("core")
            if not answer.get("ok") and not problems and not core:
                core = answer.get("error") or "the worker process gave no answer"
            self.install_dialog = InstallDialog(self.iface.mainWindow(), problems, core)
            self.install_dialog.setModal(False)
            self.install_dialog.show()

        task = WorkerRequestTask("rsclip-geo dependency check", {"command": "check"}, show)
        self.running[id(task)] = task
        task.taskCompleted.connect(lambda: self.running.pop(id(task), None))
        task.taskTerminated.connect(lambda: self.running.pop(id(task), None))
        QgsApplication.taskManager().addTask(task)
        return task

    def open_settings(self) -> None:
        from .ui.settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec_()

    def show_diagnostics(self) -> object:
        """QGIS's side now, the worker's side (its packages, GPU) from a background task."""
        from .deps import qgis_report
        from .tasks import WorkerRequestTask

        def show(answer: dict) -> None:
            worker = answer.get("result", {}).get("text") or f"worker: {answer.get('error', 'no answer')}"
            self.last_diagnostics = qgis_report() + "\n" + worker
            box = QMessageBox(QMessageBox.Information, "rsclip-geo diagnostics", self.last_diagnostics,
                              parent=self.iface.mainWindow())
            box.setModal(False)
            box.show()
            self._diagnostics_box = box

        task = WorkerRequestTask("rsclip-geo diagnostics", {"command": "diagnostics"}, show)
        self.running[id(task)] = task
        task.taskCompleted.connect(lambda: self.running.pop(id(task), None))
        task.taskTerminated.connect(lambda: self.running.pop(id(task), None))
        QgsApplication.taskManager().addTask(task)
        return task

    def message(self, text: str, level=Qgis.Info, duration: int = 6) -> None:
        """One message bar line titled 'rsclip-geo' (texts never repeat the name)."""
        self.iface.messageBar().pushMessage("rsclip-geo", text, level, duration)
