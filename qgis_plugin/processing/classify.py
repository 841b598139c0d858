"""Processing: zero-shot label for every tile of a scene."""

from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber, QgsProcessingParameterString)

from ..layers import style_classes
from ..runs import ClassifyParams
from .base import RsclipAlgorithm
from .outputs import file_to_sink, style_on_load


class ClassifyTilesAlgorithm(RsclipAlgorithm):
    LABELS, LABELS_FILE, TOP_K, MIN_SCORE = "LABELS", "LABELS_FILE", "TOP_K", "MIN_SCORE"

    def name(self) -> str:
        return "classifytiles"

    def displayName(self) -> str:
        return "Classify tiles"

    def shortHelpString(self) -> str:
        return ("Gives every tile of the scene the label whose prompts it matches best (zero-shot CLIP). "
                "Labels: comma-separated names, or a file with one label a line "
                "('name' or 'name: prompt one | prompt two'). Output: tile polygons with label, score and the "
                "top-k labels. Tiles with too many nodata pixels are skipped.")

    def initAlgorithm(self, config=None):
        self.add_scene_parameters()
        self.addParameter(QgsProcessingParameterString(self.LABELS, "Labels, comma-separated", optional=True))
        self.addParameter(QgsProcessingParameterFile(self.LABELS_FILE, "or a labels file (one a line)",
                                                     extension="txt", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.TOP_K, "Top-k labels kept per tile",
                                                       QgsProcessingParameterNumber.Integer, 3, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_SCORE, "Minimum score (below: 'unknown')",
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0.0,
                                                       maxValue=1.0))
        self.add_model_parameters()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Labelled tiles",
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        labels = self.parameterAsString(parameters, self.LABELS, context).strip()
        labels_file = self.parameterAsFile(parameters, self.LABELS_FILE, context)
        if bool(labels) == bool(labels_file):
            raise QgsProcessingException("give either labels or a labels file (exactly one)")
        params = self.run_params(ClassifyParams, parameters, context, labels=labels, labels_file=labels_file,
                                 top_k=self.parameterAsInt(parameters, self.TOP_K, context),
                                 min_score=self.parameterAsDouble(parameters, self.MIN_SCORE, context))
        result = self.run_worker("classify", params, feedback)
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, result["outputs"]["labels"], layer.crs(),
                            feedback)
        style_on_load(context, dest, style_classes, result["info"]["labels"])
        return {self.OUTPUT: dest}
