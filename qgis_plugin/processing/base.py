"""Shared parameters and plumbing of the rsclip-geo algorithms.

Every algorithm: a file-based raster layer, optional bands (as R,G,B), a tile
size in the layer's map units, the model (folder; empty: the plugin settings),
device and batch size. The work is the same worker run as the plugin's tasks
(runs.py in worker.py); Processing's feedback gets the core's progress and
cancels it. Outputs come back as files, copied into sinks / destinations here.
"""

from __future__ import annotations

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterBand,
                       QgsProcessingParameterDefinition, QgsProcessingParameterDistance,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer)

from ..icon import icon
from ..settings import DEVICES, Settings
from ..sources import LayerSourceError, raster_file
from ..runs import RunParams
from ..tasks import profile_deps_folder, run_in_worker


class RsclipAlgorithm(QgsProcessingAlgorithm):
    INPUT, BANDS, TILE_SIZE = "INPUT", "BANDS", "TILE_SIZE"
    MODEL, DEVICE, BATCH_SIZE = "MODEL", "DEVICE", "BATCH_SIZE"
    OUTPUT = "OUTPUT"

    def createInstance(self):
        return type(self)()

    def group(self) -> str:
        return "rsclip-geo"

    def groupId(self) -> str:
        return "rsclipgeo"

    def icon(self):
        return icon()

    # ---- parameters ----
    def add_scene_parameters(self, tile: bool = True) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Scene (a file-based raster)"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands used as R,G,B (1 or 3; empty: the scene's RGB / first three)", None, self.INPUT,
            optional=True, allowMultiple=True))
        if tile:
            self.addParameter(QgsProcessingParameterDistance(
                self.TILE_SIZE, "Tile size in map units (0: the model's input size in pixels)", 0.0, self.INPUT,
                minValue=0.0))

    def add_model_parameters(self) -> None:
        model = QgsProcessingParameterFile(self.MODEL, "Model bundle folder (empty: the plugin's settings)",
                                           behavior=QgsProcessingParameterFile.Folder, optional=True)
        device = QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0)
        batch = QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer,
                                             defaultValue=16, minValue=1)
        for p in (device, batch):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        for p in (model, device, batch):
            self.addParameter(p)

    # ---- reading them ----
    def scene_layer(self, parameters, context):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        try:
            return layer, raster_file(layer)
        except LayerSourceError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def run_params(self, cls: type[RunParams], parameters, context, **extra) -> RunParams:
        layer, path = self.scene_layer(parameters, context)
        bands = tuple(self.parameterAsInts(parameters, self.BANDS, context) or ()) or None
        if bands and len(bands) not in (1, 3):
            raise QgsProcessingException(f"choose 1 or 3 bands (got {len(bands)}: {list(bands)})")
        tile_px = 0
        if self.parameterDefinition(self.TILE_SIZE) is not None:
            tile_px = self.map_units_to_px(layer, self.parameterAsDouble(parameters, self.TILE_SIZE, context))
        folder = self.parameterAsFile(parameters, self.MODEL, context)
        return cls(scene=path, scene_name=layer.name(), crs_wkt=layer.crs().toWkt(), bands=bands,
                   tile_size_px=tile_px, model=folder or Settings.load().model(),
                   device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                   batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context), **extra)

    @staticmethod
    def map_units_to_px(layer, size: float) -> int:
        """A length in the layer's map units as whole pixels (0 stays 0: the model's input size)."""
        if not size or size <= 0:
            return 0
        return max(1, round(size / abs(layer.rasterUnitsPerPixelX())))

    # ---- running ----
    def run_worker(self, action: str, params: RunParams, feedback) -> dict:
        """The worker's result (outputs, info, message); its errors become QgsProcessingException."""
        from qgis.core import QgsProcessingUtils

        if not params.out_dir:
            params.out_dir = QgsProcessingUtils.tempFolder()
        feedback.pushInfo(f"model {params.model or 'default'} on {params.device}; scene {params.scene}")

        def progress(done: int, total: int) -> None:
            if total:
                feedback.setProgress(100.0 * done / total)
        answer = run_in_worker(action, params, progress, feedback.isCanceled, profile_deps_folder())
        if not answer.get("ok"):
            raise QgsProcessingException("canceled" if answer.get("canceled") else answer.get("error", "failed"))
        result = answer["result"]
        feedback.pushInfo(result["message"])
        return result
