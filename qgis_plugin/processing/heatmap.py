"""Processing: SeLo localization heatmap of a text query over a scene."""

from __future__ import annotations

from qgis.core import QgsProcessingException, QgsProcessingParameterRasterDestination, QgsProcessingParameterString

from ..layers import style_scores
from ..runs import HeatmapParams
from .base import RsclipAlgorithm
from .outputs import name_on_load, raster_to_destination, style_on_load


class HeatmapAlgorithm(RsclipAlgorithm):
    """Where in the scene a text query matches: multi-scale sliding windows (half-window overlap), each window's
    similarity spread over the cells it covers, averaged, min-max normalised to [0, 1] and smoothed (the SeLo
    method of GeoRSCLIP). Window sizes are in metres on the ground, comma-separated; empty chooses sizes from the
    scene and the model."""

    QUERY, WINDOWS = "QUERY", "WINDOWS"
    algorithm_name, display_name = "localizationheatmap", "Localization heatmap"
    action, params_class = "heatmap", HeatmapParams
    tiled = False

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Query"))
        self.addParameter(QgsProcessingParameterString(
            self.WINDOWS, "Window sizes in metres, comma-separated (empty: automatic)", optional=True))

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Heatmap"))

    def processAlgorithm(self, parameters, context, feedback):
        text = self.parameterAsString(parameters, self.WINDOWS, context)
        try:
            sizes = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise QgsProcessingException(f"window sizes must be numbers like 200,400; got {text!r}") from None
        if any(s <= 0 for s in sizes):
            raise QgsProcessingException(f"window sizes must be > 0 m; got {text!r}")
        query = self.parameterAsString(parameters, self.QUERY, context)
        _, result = self.run_action(parameters, context, feedback, query=query, scales_m=tuple(sizes))
        path = raster_to_destination(result["outputs"]["heatmap"],
                                     self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        style_on_load(context, path, style_scores, 0.0, 1.0, 0.4)  # lo, hi, cut
        name_on_load(context, path, f"Heatmap: {query.strip()}")
        return {self.OUTPUT: path}
