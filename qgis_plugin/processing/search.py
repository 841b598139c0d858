"""Processing: the tiles that best match a text query (and every tile's score as a raster)."""

from __future__ import annotations

from qgis.core import (QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterString)

from ..layers import style_hits, style_scores
from ..runs import SearchParams
from .base import RsclipAlgorithm
from .outputs import name_on_load, raster_to_destination, style_on_load


class SearchAlgorithm(RsclipAlgorithm):
    """Ranks the tiles of the scene by similarity to a text query (e.g. 'a baseball field'). The scene is indexed
    once (an .rsclip-index.parquet beside it) and the index is reused while the scene, model and tiling stay the
    same. Outputs: the top hits as ranked polygons (optionally only those that stand out: at least N standard
    deviations above the scene's mean tile score), and optionally every tile's score as a raster on the scene's
    grid."""

    QUERY, TOP, NEGATIVE, SCORES, STANDOUT = "QUERY", "TOP", "NEGATIVE", "SCORES", "STANDOUT"
    algorithm_name, display_name = "searchbytext", "Search by text"
    action, params_class = "search", SearchParams

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Query"))
        self.addParameter(QgsProcessingParameterNumber(self.TOP, "Number of hits",
                                                       QgsProcessingParameterNumber.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterString(self.NEGATIVE, "Steer away from (comma-separated)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.STANDOUT, "Only hits this many standard deviations above the mean score (0: the top hits)",
            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0, maxValue=10.0))

    def add_outputs(self) -> None:
        self.add_tiles_sink("Hits")
        self.addParameter(QgsProcessingParameterRasterDestination(self.SCORES, "Tile scores", optional=True,
                                                                  createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):
        query = self.parameterAsString(parameters, self.QUERY, context)
        _, result = self.run_action(parameters, context, feedback, query=query,
                                    top=self.parameterAsInt(parameters, self.TOP, context),
                                    negative=self.parameterAsString(parameters, self.NEGATIVE, context),
                                    standout=self.parameterAsDouble(parameters, self.STANDOUT, context))
        results = {self.OUTPUT: self.tiles_to_sink(parameters, context, feedback, result["outputs"]["hits"],
                                                   style_hits)}
        name_on_load(context, results[self.OUTPUT], f"Search hits: {query.strip()}")
        scores = self.parameterAsOutputLayer(parameters, self.SCORES, context)
        if scores:
            results[self.SCORES] = raster_to_destination(result["outputs"]["scores"], scores)
            style_on_load(context, scores, style_scores)
            name_on_load(context, scores, f"Tile scores: {query.strip()}")
        return results
