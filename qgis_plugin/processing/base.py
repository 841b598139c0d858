"""Shared parameters and plumbing of the rsclip-geo algorithms.

Every algorithm: a file-based raster layer, optional bands (as R,G,B), a tile
size in metres on the ground (as in the dialogs and the panel, whatever the CRS) and what happens at the last row/column of tiles, the model (folder; empty: the plugin settings),
device and batch size. The work is the same worker run as the plugin's tasks
(runs.py in worker.py); Processing's feedback gets the core's progress and
cancels it. Outputs come back as files, copied into sinks / destinations here.

Held here once so that each algorithm file says only what is its own: its names
(class attributes), its help (its docstring), its parameters and outputs
(add_own_parameters, add_outputs) and what it does with the worker's result.
"""

from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingParameterBand,
                       QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer)

from ..icon import icon
from ..settings import DEVICES, EDGE_TITLES, EDGES, ROTATION_TITLES, ROTATIONS, Settings
from ..sources import LayerSourceError, raster_file
from ..runs import RunParams
from ..tasks import profile_deps_folder, run_in_worker
from .outputs import file_to_sink, refuse_destinations_on, style_on_load


class RsclipAlgorithm(QgsProcessingAlgorithm):
    """Subclasses set the class attributes below (like the toolbar's tasks and dialogs), write their help as
    their docstring and add their own parameters and outputs; scene, model and worker run are the same for all."""

    INPUT, BANDS, TILE_SIZE, EDGE = "INPUT", "BANDS", "TILE_SIZE", "EDGE"
    MODEL, DEVICE, BATCH_SIZE, ROTATIONS = "MODEL", "DEVICE", "BATCH_SIZE", "ROTATIONS"
    OUTPUT = "OUTPUT"

    algorithm_name = ""  # the id within the provider: rsclipgeo:<algorithm_name>
    display_name = ""
    action = ""  # the worker action, as in tasks.py
    params_class: type[RunParams] = RunParams
    tiled = True  # False: no tile-size parameter (the heatmap tiles by its own window sizes)

    def createInstance(self):
        return type(self)()

    def name(self) -> str:
        return self.algorithm_name

    def displayName(self) -> str:
        return self.display_name

    def shortHelpString(self) -> str:
        """The algorithm's own docstring as one paragraph (``__doc__`` is not inherited: none, no help)."""
        return " ".join((type(self).__doc__ or "").split())

    def group(self) -> str:
        return "rsclip-geo"

    def groupId(self) -> str:
        return "rsclipgeo"

    def icon(self):
        return icon()

    # ---- parameters ----
    def initAlgorithm(self, config=None):
        """The dialog's order: scene, the algorithm's own parameters, model (mostly advanced), outputs."""
        self.add_scene_parameters(tile=self.tiled)
        self.add_own_parameters()
        self.add_model_parameters()
        self.add_outputs()

    def add_own_parameters(self) -> None:
        raise NotImplementedError

    def add_outputs(self) -> None:
        raise NotImplementedError

    def add_scene_parameters(self, tile: bool = True) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Scene (a file-based raster)"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands used as R,G,B (1 or 3; empty: the scene's RGB / first three)", None, self.INPUT,
            optional=True, allowMultiple=True))
        if tile:
            self.addParameter(QgsProcessingParameterNumber(
                self.TILE_SIZE, "Tile size in metres on the ground (0: the model's input size in pixels)",
                QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
            self.addParameter(QgsProcessingParameterEnum(
                self.EDGE, "Last row/column of tiles", options=[EDGE_TITLES[e] for e in EDGES], defaultValue=0))

    def add_model_parameters(self) -> None:
        model = QgsProcessingParameterFile(self.MODEL, "Model bundle folder (empty: the plugin's settings)",
                                           behavior=QgsProcessingParameterFile.Folder, optional=True)
        device = QgsProcessingParameterEnum(self.DEVICE, "Device", options=list(DEVICES), defaultValue=0)
        batch = QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", QgsProcessingParameterNumber.Integer,
                                             defaultValue=16, minValue=1)
        rotations = QgsProcessingParameterEnum(self.ROTATIONS, "Rotations: quarter turns averaged per tile",
                                               options=[ROTATION_TITLES[r] for r in ROTATIONS], defaultValue=0)
        for p in (device, batch, rotations):
            p.setFlags(p.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        for p in (model, device, batch, rotations):
            self.addParameter(p)

    def add_tiles_sink(self, description: str) -> None:
        """OUTPUT as tile polygons: what classify, search and count write."""
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, description, QgsProcessing.TypeVectorPolygon))

    # ---- reading them ----
    def scene_layer(self, parameters, context):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        try:
            return layer, raster_file(layer)
        except LayerSourceError as exc:
            raise QgsProcessingException(str(exc)) from exc

    def run_params(self, parameters, context, **extra) -> RunParams:
        """``params_class`` from the common parameters, plus the algorithm's own fields in ``extra``."""
        layer, path = self.scene_layer(parameters, context)
        bands = tuple(self.parameterAsInts(parameters, self.BANDS, context) or ()) or None
        if bands and len(bands) not in (1, 3):
            raise QgsProcessingException(f"choose 1 or 3 bands (got {len(bands)}: {list(bands)})")
        tile_m = 0.0  # metres whatever the CRS (the core converts them geodesically at the scene centre)
        if self.parameterDefinition(self.TILE_SIZE) is not None:
            tile_m = max(0.0, self.parameterAsDouble(parameters, self.TILE_SIZE, context))
        edge = EDGES[0]
        if self.parameterDefinition(self.EDGE) is not None:
            edge = EDGES[self.parameterAsEnum(parameters, self.EDGE, context)]
        folder = self.parameterAsFile(parameters, self.MODEL, context)
        return self.params_class(scene=path, scene_name=layer.name(), crs_wkt=layer.crs().toWkt(), bands=bands,
                                 tile_size_m=tile_m, edge=edge, model=folder or Settings.load().model(),
                                 device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
                                 batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                                 rotations=ROTATIONS[self.parameterAsEnum(parameters, self.ROTATIONS, context)],
                                 **extra)

    @staticmethod
    def map_units_to_px(layer, size: float) -> int:
        """A length in the layer's map units as whole pixels (0 stays 0: the model's input size)."""
        if not size or size <= 0:
            return 0
        return max(1, round(size / abs(layer.rasterUnitsPerPixelX())))

    # ---- running ----
    def run_action(self, parameters, context, feedback, **extra) -> tuple[RunParams, dict]:
        """This algorithm's action in the worker, as the toolbar runs it: its params and its result."""
        params = self.run_params(parameters, context, **extra)
        refuse_destinations_on(self, parameters, params.scene)  # before any work
        return params, self.run_worker(self.action, params, feedback)

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

    def tiles_to_sink(self, parameters, context, feedback, path: str, style, *style_args) -> str:
        """The worker's tile polygons into OUTPUT, in the scene's CRS, styled when Processing loads them."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, path, layer.crs(), feedback)
        style_on_load(context, dest, style, *style_args)
        return dest
