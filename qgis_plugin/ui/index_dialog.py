"""Build (or refresh) the embedding index of a scene."""

from __future__ import annotations

from qgis.PyQt.QtWidgets import QCheckBox

from ..runs import IndexParams
from .common import RunDialog


class IndexDialog(RunDialog):
    title = "Build index"
    params_class = IndexParams
    note = ("Encodes every tile once into SCENE.rsclip-index.parquet beside the scene; search, heatmap and count "
            "reuse it while the scene, the model and the tile size stay the same.")

    def build(self) -> None:
        self.rebuild = QCheckBox("Rebuild even if a fresh index exists", self)
        self.form.addRow("", self.rebuild)

    def extra(self) -> dict:
        return dict(rebuild=self.rebuild.isChecked())
