"""Classify tiles: labels typed in, or a labels file."""

from __future__ import annotations

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import QDoubleSpinBox, QLineEdit, QSpinBox

from ..runs import ClassifyParams
from .common import RunDialog


class ClassifyDialog(RunDialog):
    title = "Classify tiles"
    params_class = ClassifyParams
    note = ("Each tile gets the label whose prompts it matches best. A labels file has one label a line, "
            "or 'name: prompt one | prompt two' to give a label its own prompts.")

    def build(self) -> None:
        self.labels = QLineEdit(self)
        self.labels.setPlaceholderText("water, forest, farmland, residential area")
        self.labels_file = QgsFileWidget(self)
        self.labels_file.setFilter("Text files (*.txt);;All files (*)")
        self.top_k = QSpinBox(self)
        self.top_k.setRange(1, 20)
        self.top_k.setValue(3)
        self.min_score = QDoubleSpinBox(self)
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.form.addRow("Labels (comma-separated)", self.labels)
        self.form.addRow("or labels file", self.labels_file)
        self.form.addRow("Top-k kept per tile", self.top_k)
        self.form.addRow("Minimum score ('unknown' below)", self.min_score)

    def extra(self) -> dict:
        labels, path = self.labels.text().strip(), self.labels_file.filePath().strip()
        if bool(labels) == bool(path):
            raise ValueError("type labels or choose a labels file (one of the two)")
        return dict(labels=labels, labels_file=path, top_k=self.top_k.value(), min_score=self.min_score.value())
