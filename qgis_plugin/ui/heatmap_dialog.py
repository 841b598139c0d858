"""Localization heatmap of a text query."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QLineEdit

from ..runs import HeatmapParams
from .common import RunDialog


class HeatmapDialog(RunDialog):
    title = "Localization heatmap"
    params_class = HeatmapParams
    note = ("Multi-scale sliding windows; each window's similarity to the query is spread over the cells it "
            "covers, averaged, normalised to 0..1 and smoothed. Low scores are transparent.")

    def build(self) -> None:
        self.query = QLineEdit(self)
        self.query.setPlaceholderText("a baseball field")
        self.windows = QLineEdit(self)
        self.windows.setPlaceholderText("automatic, or e.g. 200, 400 (metres)")
        self.form.addRow("Query", self.query)
        self.form.addRow("Window sizes (m)", self.windows)

    def extra(self) -> dict:
        query = self.query.text().strip()
        if not query:
            raise ValueError("type the text to localise, e.g. 'a baseball field'")
        try:
            sizes = tuple(float(v) for v in self.windows.text().replace(";", ",").split(",") if v.strip())
        except ValueError:
            raise ValueError(f"window sizes must be numbers in metres, like 200, 400; got {self.windows.text()!r}")
        if any(s <= 0 for s in sizes):
            raise ValueError("window sizes must be > 0 m")
        return dict(query=query, scales_m=sizes)
