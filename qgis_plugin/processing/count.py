"""Processing: how many of an object each tile holds (RemoteCount prompts)."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterNumber, QgsProcessingParameterString

from ..layers import style_counts
from ..runs import CountParams
from .base import RsclipAlgorithm


class CountObjectsAlgorithm(RsclipAlgorithm):
    """Per tile, the count n in 1..max whose prompt 'a satellite photo of {n} {objects}' matches best, with its
    probability (RemoteCount's protocol). Every tile gets a count of at least 1, so use the probability, or search
    first, to find tiles without the object."""

    OBJECT, MAX_COUNT = "OBJECT", "MAX_COUNT"
    algorithm_name, display_name = "countobjects", "Count objects"
    action, params_class = "count", CountParams

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.OBJECT, "Object (e.g. 'airplane', 'storage tank')"))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_COUNT, "Largest count",
                                                       QgsProcessingParameterNumber.Integer, 10, minValue=1,
                                                       maxValue=1000))  # count_prompts.MAX_COUNT

    def add_outputs(self) -> None:
        self.add_tiles_sink("Counts")

    def processAlgorithm(self, parameters, context, feedback):
        params, result = self.run_action(parameters, context, feedback,
                                         object_name=self.parameterAsString(parameters, self.OBJECT, context),
                                         max_count=self.parameterAsInt(parameters, self.MAX_COUNT, context))
        dest = self.tiles_to_sink(parameters, context, feedback, result["outputs"]["counts"], style_counts,
                                  params.max_count)
        return {self.OUTPUT: dest}
