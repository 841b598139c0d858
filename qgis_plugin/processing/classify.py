"""Processing: zero-shot label for every tile of a scene."""

from __future__ import annotations

from qgis.core import (QgsProcessingException, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from ..layers import style_classes
from ..runs import ClassifyParams
from .base import RsclipAlgorithm


class ClassifyTilesAlgorithm(RsclipAlgorithm):
    """Gives every tile of the scene the label whose prompts it matches best (zero-shot CLIP). Labels:
    comma-separated names, or a file with one label a line ('name' or 'name: prompt one | prompt two'). Output:
    tile polygons with label, score and the top-k labels. Tiles with too many nodata pixels are skipped."""

    LABELS, LABELS_FILE, TOP_K, MIN_SCORE = "LABELS", "LABELS_FILE", "TOP_K", "MIN_SCORE"
    algorithm_name, display_name = "classifytiles", "Classify tiles"
    action, params_class = "classify", ClassifyParams

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.LABELS, "Labels, comma-separated", optional=True))
        self.addParameter(QgsProcessingParameterFile(self.LABELS_FILE, "or a labels file (one a line)",
                                                     extension="txt", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.TOP_K, "Top-k labels kept per tile",
                                                       QgsProcessingParameterNumber.Integer, 3, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_SCORE, "Minimum score (below: 'unknown')",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0,
                                                       maxValue=1.0))

    def add_outputs(self) -> None:
        self.add_tiles_sink("Labelled tiles")

    def processAlgorithm(self, parameters, context, feedback):
        labels = self.parameterAsString(parameters, self.LABELS, context).strip()
        labels_file = self.parameterAsFile(parameters, self.LABELS_FILE, context)
        if bool(labels) == bool(labels_file):
            raise QgsProcessingException("give either labels or a labels file (exactly one)")
        _, result = self.run_action(parameters, context, feedback, labels=labels, labels_file=labels_file,
                                    top_k=self.parameterAsInt(parameters, self.TOP_K, context),
                                    min_score=self.parameterAsDouble(parameters, self.MIN_SCORE, context))
        dest = self.tiles_to_sink(parameters, context, feedback, result["outputs"]["labels"], style_classes,
                                  result["info"]["labels"])
        return {self.OUTPUT: dest}
