"""Settings: model bundle (default / folder / pulled), device, batch size, rotations, tile size, outputs."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                                 QRadioButton, QSpinBox, QVBoxLayout)

from ..settings import (DEVICES, MODEL_SOURCES, ROTATION_TITLES, ROTATIONS, Settings, pulled_model_names,
                        pulled_models_dir)


class SettingsDialog(QDialog):
    def __init__(self, parent=None, settings: Settings | None = None):
        super().__init__(parent)
        self.setWindowTitle("rsclip-geo settings")
        self.settings = settings or Settings.load()
        s = self.settings
        form = QFormLayout()
        self.source_buttons = QButtonGroup(self)
        titles = {"default": "Shipped default model", "folder": "Model bundle folder", "pulled": "Pulled model"}
        for i, source in enumerate(MODEL_SOURCES):
            button = QRadioButton(titles[source], self)
            button.setChecked(source == s.model_source)
            self.source_buttons.addButton(button, i)
        self.folder = QgsFileWidget(self)
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder.setFilePath(s.model_folder)
        self.pulled = QComboBox(self)
        self.pulled.setEditable(True)
        self.pulled.addItems(pulled_model_names())
        self.pulled.setCurrentText(s.model_name)
        self.pulled.setToolTip(f"models pulled into {pulled_models_dir()}")
        form.addRow(self.source_buttons.button(0))
        form.addRow(self.source_buttons.button(1), self.folder)
        form.addRow(self.source_buttons.button(2), self.pulled)
        self.device = QComboBox(self)
        self.device.addItems(DEVICES)
        self.device.setCurrentText(s.device)
        self.batch = QSpinBox(self)
        self.batch.setRange(1, 1024)
        self.batch.setValue(s.batch_size)
        self.rotations = QComboBox(self)
        self.rotations.addItems([ROTATION_TITLES[r] for r in ROTATIONS])
        self.rotations.setCurrentIndex(ROTATIONS.index(s.rotations))
        self.rotations.setToolTip("aerial scenes have no 'up': the mean embedding of a tile and its quarter turns "
                                  "labels it more reliably (the model card has the figures); indexes built with "
                                  "another setting are rebuilt")
        self.tile = QDoubleSpinBox(self)
        self.tile.setRange(0.0, 1e6)
        self.tile.setDecimals(1)
        self.tile.setSpecialValueText("model input size (pixels)")
        self.tile.setValue(s.tile_size_m)
        self.top = QSpinBox(self)
        self.top.setRange(1, 10000)
        self.top.setValue(s.top)
        self.output = QgsFileWidget(self)
        self.output.setStorageMode(QgsFileWidget.GetDirectory)
        self.output.setFilePath(s.output_folder)
        form.addRow("Device", self.device)
        form.addRow("Batch size", self.batch)
        form.addRow("Rotations", self.rotations)
        form.addRow("Tile size (m on the ground)", self.tile)
        self.standout = QDoubleSpinBox(self)
        self.standout.setRange(0.0, 10.0)
        self.standout.setSingleStep(0.5)
        self.standout.setSpecialValueText("off (the top hits)")
        self.standout.setSuffix(" sd")
        self.standout.setValue(s.standout)
        self.standout.setToolTip("keep only hits whose score is this many standard deviations above the mean "
                                 "score of the scene's tiles: hits only where the query stands out")
        form.addRow("Search hits", self.top)
        form.addRow("Hits must stand out by", self.standout)
        form.addRow("Output folder (empty: beside the project)", self.output)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(buttons)

    def values(self) -> Settings:
        return Settings(model_source=MODEL_SOURCES[max(0, self.source_buttons.checkedId())],
                        model_folder=self.folder.filePath(), model_name=self.pulled.currentText().strip(),
                        device=self.device.currentText(), batch_size=self.batch.value(),
                        rotations=ROTATIONS[self.rotations.currentIndex()],
                        tile_size_m=self.tile.value(), top=self.top.value(), standout=self.standout.value(),
                        output_folder=self.output.filePath()).checked()

    def accept(self) -> None:
        self.settings = self.values()
        self.settings.save()
        super().accept()
