"""Stand-in plugin while dependencies are missing: one action that opens the installer."""

from __future__ import annotations

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QAction, QPushButton

from .icon import icon

MENU = "&rsclip-geo"


class InstallerPlugin:
    def __init__(self, iface, problems, core_problem: str | None = None):
        self.iface, self.problems, self.core_problem = iface, problems, core_problem
        self.action = None
        self.bar_item = None
        self.dialog = None

    def initProcessing(self) -> None:
        """No algorithms until the dependencies are installed (qgis_process calls this)."""

    def initGui(self) -> None:
        self.action = QAction(icon(), "Install rsclip-geo dependencies...", self.iface.mainWindow())
        self.action.setObjectName("rsclipGeoInstallDependencies")
        self.action.triggered.connect(self.open)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.iface.addToolBarIcon(self.action)
        bar = self.iface.messageBar()
        item = bar.createMessage("rsclip-geo", "needs Python packages this QGIS does not have yet")
        button = QPushButton("Install...", item)
        button.clicked.connect(self.open)
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Warning, 0)
        self.bar_item = item

    def unload(self) -> None:
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)

    def make_dialog(self):
        from .ui.install_dialog import InstallDialog

        self.dialog = InstallDialog(self.iface.mainWindow(), self.problems, self.core_problem)
        self.dialog.installed.connect(self.installed)
        return self.dialog

    def open(self) -> None:
        self.make_dialog().exec_()

    def installed(self) -> None:
        """pip succeeded: the warning goes, a restart is all that is left."""
        if self.bar_item is not None:
            self.iface.messageBar().popWidget(self.bar_item)
            self.bar_item = None
        self.iface.messageBar().pushMessage("rsclip-geo", "dependencies installed: restart QGIS to use the plugin",
                                            Qgis.Success, 0)
