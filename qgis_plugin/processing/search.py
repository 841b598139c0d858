"""Processing: the tiles that best match a text query (and every tile's score as a raster)."""

from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingParameterFeatureSink, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination, QgsProcessingParameterString)

from ..layers import style_hits, style_scores
from ..runs import SearchParams
from .base import RsclipAlgorithm
from .outputs import file_to_sink, raster_to_destination, style_on_load


class SearchAlgorithm(RsclipAlgorithm):
    QUERY, TOP, NEGATIVE, SCORES = "QUERY", "TOP", "NEGATIVE", "SCORES"

    def name(self) -> str:
        return "searchbytext"

    def displayName(self) -> str:
        return "Search by text"

    def shortHelpString(self) -> str:
        return ("Ranks the tiles of the scene by similarity to a text query (e.g. 'a baseball field'). "
                "The scene is indexed once (an .rsclip-index.parquet beside it) and the index is reused while "
                "the scene, model and tiling stay the same. Outputs: the top hits as ranked polygons, and "
                "optionally every tile's score as a raster (one pixel per tile).")

    def initAlgorithm(self, config=None):
        self.add_scene_parameters()
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Query"))
        self.addParameter(QgsProcessingParameterNumber(self.TOP, "Number of hits",
                                                       QgsProcessingParameterNumber.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterString(self.NEGATIVE, "Steer away from (comma-separated)",
                                                       optional=True))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Hits", QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterRasterDestination(self.SCORES, "Tile scores", optional=True,
                                                                  createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):
        params = self.run_params(SearchParams, parameters, context,
                                 query=self.parameterAsString(parameters, self.QUERY, context),
                                 top=self.parameterAsInt(parameters, self.TOP, context),
                                 negative=self.parameterAsString(parameters, self.NEGATIVE, context))
        result = self.run_worker("search", params, feedback)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, result["outputs"]["hits"], layer.crs(), feedback)
        style_on_load(context, dest, style_hits)
        results = {self.OUTPUT: dest}
        scores = self.parameterAsOutputLayer(parameters, self.SCORES, context)
        if scores:
            results[self.SCORES] = raster_to_destination(result["outputs"]["scores"], scores)
            style_on_load(context, scores, style_scores)
        return results
