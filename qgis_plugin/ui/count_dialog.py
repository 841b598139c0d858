"""Count objects per tile."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QLineEdit, QSpinBox

from ..runs import CountParams
from .common import RunDialog


class CountDialog(RunDialog):
    title = "Count objects"
    params_class = CountParams
    note = ("RemoteCount prompts ('a satellite photo of three airplanes'): each tile gets the best count in "
            "1..max with its probability. A tile without the object still gets a count, so read the "
            "probability (or search first).")

    def build(self) -> None:
        self.object_name = QLineEdit(self)
        self.object_name.setPlaceholderText("airplane")
        self.max_count = QSpinBox(self)
        self.max_count.setRange(1, 100)
        self.max_count.setValue(10)
        self.form.addRow("Object", self.object_name)
        self.form.addRow("Largest count", self.max_count)

    def extra(self) -> dict:
        name = self.object_name.text().strip()
        if not name:
            raise ValueError("say what to count, e.g. 'airplane'")
        return dict(object_name=name, max_count=self.max_count.value())
