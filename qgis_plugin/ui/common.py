"""The frame every run dialog shares: a raster layer picker, a form, OK/Cancel, validation on OK."""

from __future__ import annotations

from qgis.core import QgsMapLayerProxyModel, QgsProject
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QMessageBox, QVBoxLayout

from ..settings import Settings
from ..sources import LayerSourceError, run_params


class RunDialog(QDialog):
    """Subclasses add rows in ``build`` and return their params' extra fields from ``extra``."""

    title = ""
    params_class = None
    note = ""

    def __init__(self, parent=None, layer=None, settings: Settings | None = None):
        super().__init__(parent)
        self.settings = settings or Settings.load()
        self.setWindowTitle(f"rsclip-geo: {self.title}")
        self.form = QFormLayout()
        self.layer_box = QgsMapLayerComboBox(self)
        self.layer_box.setFilters(QgsMapLayerProxyModel.RasterLayer)
        if layer is not None and QgsProject.instance().mapLayer(layer.id()) is not None:
            self.layer_box.setLayer(layer)
        self.form.addRow("Scene", self.layer_box)
        self.build()
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        box.addLayout(self.form)
        if self.note:
            label = QLabel(self.note, self)
            label.setWordWrap(True)
            box.addWidget(label)
        box.addWidget(buttons)

    def build(self) -> None:
        raise NotImplementedError

    def extra(self) -> dict:
        raise NotImplementedError

    def params(self):
        """The task parameters; ValueError (with a message for the user) when something is missing."""
        return run_params(self.params_class, self.layer_box.currentLayer(), self.settings, **self.extra())

    def accept(self) -> None:
        try:
            self.params()
        except (LayerSourceError, ValueError) as exc:
            QMessageBox.warning(self, f"rsclip-geo: {self.title}", str(exc))
            return
        super().accept()
