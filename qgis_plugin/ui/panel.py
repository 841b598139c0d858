"""The rsclip-geo dock panel beside the map: model (with its card), scene, bands, tile size in metres, area,
the text and labels, and the actions. Inputs are remembered (QgsSettings) between runs and projects; model
and tile size are the plugin's Settings, so the panel, the toolbar and the dialogs agree."""

from __future__ import annotations

from typing import Callable

from qgis.core import (QgsCoordinateTransform, QgsMapLayerProxyModel, QgsProject, QgsRasterLayer, QgsSettings,
                       QgsVectorLayer)
from qgis.gui import QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox, QgsRasterBandComboBox
from qgis.PyQt.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel,
                                 QLineEdit, QPushButton, QVBoxLayout, QWidget)

from ..model_card import card_text, model_dir
from ..runs import ClassifyParams, CountParams, HeatmapParams, SearchParams
from ..settings import Settings, pulled_model_names
from ..sources import LayerSourceError, area_raster, displayed_bands, run_params

KEY = "rsclip_geo/panel/"
AREAS = ("Whole layer", "Visible extent", "Extent of the selected features")
ACTIONS = {"search": ("Search", SearchParams), "classify": ("Classify tiles", ClassifyParams),
           "heatmap": ("Heatmap", HeatmapParams), "count": ("Count", CountParams)}


class RsclipPanel(QgsDockWidget):
    """``start(action, params)`` runs a task (the plugin's start); ``params(action)`` is what a button runs."""

    def __init__(self, iface, start: Callable[[str, object], object], parent=None):
        super().__init__("rsclip-geo", parent)
        self.setObjectName("rsclipGeoPanel")
        self.iface, self.start = iface, start
        body = QWidget(self)
        box = QVBoxLayout(body)
        form = QFormLayout()
        box.addLayout(form)
        self.model = QComboBox(body)
        self.folder = QgsFileWidget(body)
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.card = QLabel(body)
        self.card.setWordWrap(True)
        self.card.setStyleSheet("color: palette(mid); font-size: small")
        form.addRow("Model", self.model)
        form.addRow("Bundle folder", self.folder)
        form.addRow(self.card)
        self.layer = QgsMapLayerComboBox(body)
        self.layer.setFilters(QgsMapLayerProxyModel.RasterLayer)
        form.addRow("Scene", self.layer)
        bands = QHBoxLayout()
        self.bands = [QgsRasterBandComboBox(body) for _ in range(3)]
        for colour, combo in zip("RGB", self.bands):
            bands.addWidget(QLabel(colour, body))
            bands.addWidget(combo, 1)
        form.addRow("Bands", bands)
        self.band_hint = QLabel(body)
        self.band_hint.setWordWrap(True)
        self.band_hint.setStyleSheet("font-size: small")
        form.addRow(self.band_hint)
        self.tile = QDoubleSpinBox(body)
        self.tile.setRange(0.0, 1e6)
        self.tile.setDecimals(0)
        self.tile.setSuffix(" m")
        self.tile.setSpecialValueText("model input size (pixels)")
        form.addRow("Tile size", self.tile)
        self.area = QComboBox(body)
        self.area.addItems(AREAS)
        form.addRow("Area", self.area)
        self.text = QLineEdit(body)
        self.text.setPlaceholderText("what to find, e.g. a baseball field")
        self.text.setClearButtonEnabled(True)
        self.labels = QLineEdit(body)
        self.labels.setPlaceholderText("labels, e.g. water, forest, farmland")
        form.addRow("Text", self.text)
        form.addRow("Labels", self.labels)
        grid = QGridLayout()
        self.buttons = {}
        for i, (action, (title, _)) in enumerate(ACTIONS.items()):
            button = QPushButton(title, body)
            button.setObjectName(f"rsclipGeoPanel{action.capitalize()}")
            button.clicked.connect(lambda _=False, a=action: self.run(a))
            grid.addWidget(button, i // 2, i % 2)
            self.buttons[action] = button
        box.addLayout(grid)
        self.status = QLabel(body)
        self.status.setWordWrap(True)
        box.addWidget(self.status)
        self.outputs = QLabel(body)
        self.outputs.setWordWrap(True)
        self.outputs.setStyleSheet("font-size: small")
        box.addWidget(self.outputs)
        box.addStretch(1)
        self.setWidget(body)
        self.load()
        self.model.currentIndexChanged.connect(self.model_changed)
        self.folder.fileChanged.connect(self.model_changed)
        self.layer.layerChanged.connect(self.layer_changed)
        for combo in self.bands:
            combo.bandChanged.connect(self.update_hint)
        self.layer_changed(self.layer.currentLayer())

    # ---- settings ----
    def load(self) -> None:
        s = Settings.load()
        self.model.addItem("Shipped default model", "default|")
        for name in pulled_model_names():
            self.model.addItem(f"Pulled: {name}", f"pulled|{name}")
        self.model.addItem("Bundle folder (below)", "folder|")
        index = self.model.findData(f"{s.model_source}|{s.model_name if s.model_source == 'pulled' else ''}")
        self.model.setCurrentIndex(max(0, index))
        self.folder.setFilePath(s.model_folder)
        self.tile.setValue(s.tile_size_m)
        q = QgsSettings()
        area = q.value(KEY + "area", AREAS[0])
        self.area.setCurrentIndex(AREAS.index(area) if area in AREAS else 0)
        self.text.setText(q.value(KEY + "text", ""))
        self.labels.setText(q.value(KEY + "labels", ""))
        self.update_card()
        self.outputs.setText(f"outputs go to {s.runs_folder()} (Settings: output folder)")

    def save(self) -> Settings:
        """The panel's inputs remembered; model and tile size become the plugin's settings."""
        s = Settings.load()
        source, name = self.model_choice()
        s.model_source = source
        s.model_name = name if source == "pulled" else s.model_name
        s.model_folder = self.folder.filePath()
        s.tile_size_m = self.tile.value()
        s.save()
        q = QgsSettings()
        for key, value in (("area", self.area.currentText()), ("text", self.text.text()),
                           ("labels", self.labels.text())):
            q.setValue(KEY + key, value)
        return s

    def model_choice(self) -> tuple[str, str]:
        """(model source, pulled name) of the chosen entry."""
        source, _, name = (self.model.currentData() or "default|").partition("|")
        return source, name

    def model_changed(self, *_) -> None:
        self.update_card()
        self.save()

    def update_card(self) -> None:
        source, name = self.model_choice()
        self.folder.setEnabled(source == "folder")
        self.card.setText(card_text(model_dir(source, self.folder.filePath(), name)))

    # ---- scene and bands ----
    def layer_changed(self, layer) -> None:
        raster = layer if isinstance(layer, QgsRasterLayer) else None
        shown = displayed_bands(raster) if raster is not None else None
        for i, combo in enumerate(self.bands):
            combo.setLayer(raster)
            if shown:
                combo.setBand(shown[i] if len(shown) == 3 else shown[0])
        self.update_hint()

    def chosen_bands(self) -> tuple[int, ...] | None:
        bands = tuple(c.currentBand() for c in self.bands)
        if any(b < 1 for b in bands):
            return None
        return bands[:1] if len(set(bands)) == 1 else bands

    def update_hint(self, *_) -> None:
        bands = self.chosen_bands()
        if not bands:
            self.band_hint.setText("")
            return
        text = f"the model sees bands {','.join(map(str, bands))} as red, green, blue (as the layer shows them)"
        if bands == (3, 2, 1):
            text += "; right for data stored blue, green, red (Landsat/Sentinel-2 exports)"
        elif len(bands) == 3 and bands[0] < bands[2]:
            text += "; if the file is stored blue, green, red (BGR), choose 3, 2, 1"
        self.band_hint.setText(text)

    # ---- running ----
    def params(self, action: str):
        """The action's parameters from the panel; LayerSourceError / ValueError say what is missing."""
        settings = self.save()
        layer = self.layer.currentLayer()
        text, labels = self.text.text().strip(), self.labels.text().strip()
        if action == "classify" and not labels:
            raise ValueError("type the labels first, e.g. water, forest, farmland")
        if action != "classify" and not text:
            raise ValueError("type what to look for first, e.g. a baseball field")
        extra = {"search": dict(query=text, top=settings.top), "classify": dict(labels=labels),
                 "heatmap": dict(query=text), "count": dict(object_name=text)}[action]
        params = run_params(ACTIONS[action][1], layer, settings, **extra)
        params.bands = self.chosen_bands()
        area = self.area.currentText()
        if area != AREAS[0]:
            crs, extent = self.area_extent(area)
            to_layer = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance())
            params.scene = area_raster(layer, to_layer.transformBoundingBox(extent), settings.runs_folder() / "areas")
        return params

    def area_extent(self, area: str):
        """(CRS, rectangle) of the chosen area: the map canvas's extent, or the selected features' bounding box
        (of the active vector layer)."""
        if area == AREAS[1]:
            canvas = self.iface.mapCanvas()
            return canvas.mapSettings().destinationCrs(), canvas.extent()
        vector = self.iface.activeLayer()
        if not isinstance(vector, QgsVectorLayer) or not vector.selectedFeatureCount():
            raise ValueError("select features (e.g. polygons) in the active vector layer first, or choose another "
                             "area")
        return vector.crs(), vector.boundingBoxOfSelected()

    def run(self, action: str):
        try:
            params = self.params(action)
        except (LayerSourceError, ValueError) as exc:
            self.status.setText(str(exc))
            return None
        self.status.setText("")
        return self.start(action, params)
