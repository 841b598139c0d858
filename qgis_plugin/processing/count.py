"""Processing: how many of an object each tile holds (RemoteCount prompts)."""

from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingParameterFeatureSink, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from ..layers import style_counts
from ..runs import CountParams
from .base import RsclipAlgorithm
from .outputs import file_to_sink, style_on_load


class CountObjectsAlgorithm(RsclipAlgorithm):
    OBJECT, MAX_COUNT = "OBJECT", "MAX_COUNT"

    def name(self) -> str:
        return "countobjects"

    def displayName(self) -> str:
        return "Count objects"

    def shortHelpString(self) -> str:
        return ("Per tile, the count n in 1..max whose prompt 'a satellite photo of {n} {objects}' matches "
                "best, with its probability (RemoteCount's protocol). Every tile gets a count of at least 1, "
                "so use the probability, or search first, to find tiles without the object.")

    def initAlgorithm(self, config=None):
        self.add_scene_parameters()
        self.addParameter(QgsProcessingParameterString(self.OBJECT, "Object (e.g. 'airplane', 'storage tank')"))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_COUNT, "Largest count",
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=1))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Counts", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        params = self.run_params(CountParams, parameters, context,
                                 object_name=self.parameterAsString(parameters, self.OBJECT, context),
                                 max_count=self.parameterAsInt(parameters, self.MAX_COUNT, context))
        result = self.run_worker("count", params, feedback)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, result["outputs"]["counts"], layer.crs(),
                            feedback)
        style_on_load(context, dest, style_counts, params.max_count)
        return {self.OUTPUT: dest}
