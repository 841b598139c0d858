"""Processing: SeLo localization heatmap of a text query over a scene."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterRasterDestination, QgsProcessingParameterString

from ..layers import style_scores
from ..runs import HeatmapParams
from .base import RsclipAlgorithm
from .outputs import raster_to_destination, style_on_load


class HeatmapAlgorithm(RsclipAlgorithm):
    QUERY, WINDOWS = "QUERY", "WINDOWS"

    def name(self) -> str:
        return "localizationheatmap"

    def displayName(self) -> str:
        return "Localization heatmap"

    def shortHelpString(self) -> str:
        return ("Where in the scene a text query matches: multi-scale sliding windows (half-window overlap), "
                "each window's similarity spread over the cells it covers, averaged, min-max normalised to "
                "[0, 1] and smoothed (the SeLo method of GeoRSCLIP). Window sizes are in the layer's map units, "
                "comma-separated; empty chooses sizes from the scene and the model.")

    def initAlgorithm(self, config=None):
        self.add_scene_parameters(tile=False)
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Query"))
        self.addParameter(QgsProcessingParameterString(
            self.WINDOWS, "Window sizes in map units, comma-separated (empty: automatic)", optional=True))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Heatmap"))

    def processAlgorithm(self, parameters, context, feedback):
        layer, _ = self.scene_layer(parameters, context)
        text = self.parameterAsString(parameters, self.WINDOWS, context)
        try:
            sizes = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise QgsProcessingException(f"window sizes must be numbers like 200,400; got {text!r}") from None
        params = self.run_params(HeatmapParams, parameters, context,
                                 query=self.parameterAsString(parameters, self.QUERY, context),
                                 scales_px=tuple(self.map_units_to_px(layer, s) for s in sizes))
        result = self.run_worker("heatmap", params, feedback)
        path = raster_to_destination(result["outputs"]["heatmap"],
                                     self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        style_on_load(context, path, style_scores, 0.0, 1.0, 0.4)  # lo, hi, cut
        return {self.OUTPUT: path}
