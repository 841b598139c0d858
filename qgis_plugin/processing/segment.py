"""Processing: find the objects a text query names, as polygons styled and labelled with their score."""

from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterString)

from ..segment_run import SegmentParams
from .base import RsclipAlgorithm
from .outputs import file_to_sink, name_on_load, raster_to_destination, style_on_load


def style_objects(layer, colour=(0, 200, 255)) -> None:
    """Outlined, lightly filled polygons (the scene stays visible), best drawn last, labelled with their score."""
    from ..layers import style_labelled_outlines

    style_labelled_outlines(layer, colour, fill_alpha=50, width_mm=0.6, order_by="score", ascending=True,
                            label="format_number(\"score\", 3)", halo=(0, 0, 0))


class FindObjectsAlgorithm(RsclipAlgorithm):
    """Find the objects a text names (e.g. 'storage tanks') as one polygon each, with their score (the best cosine
    similarity inside) and area in m2. Needs a model with a dense head (rsclip-geo models export --dense): one pass
    per window scores every 32 px cell; the map is thresholded (auto: the model's calibrated threshold, else Otsu on the scene's scores; or a number),
    touching objects are split at local maxima. Optionally refined by a SAM/MobileSAM ONNX folder."""

    QUERY, THRESHOLD, MIN_AREA, NEGATIVE, REFINE, DENSE = "QUERY", "THRESHOLD", "MIN_AREA", "NEGATIVE", "REFINE", "DENSE"
    algorithm_name, display_name = "findobjects", "Find objects by text"
    action, params_class = "segment", SegmentParams
    tiled = False

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterString(self.QUERY, "Objects to find (text)"))
        self.addParameter(QgsProcessingParameterString(
            self.THRESHOLD, "Score threshold ('auto' = Otsu on the scene's scores, or a number)", defaultValue="auto"))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Minimum area in m2 (0: half a dense cell)", QgsProcessingParameterNumber.Double, 0.0,
            minValue=0.0))
        self.addParameter(QgsProcessingParameterString(
            self.NEGATIVE, "Texts to steer away from, comma-separated", optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.REFINE, "SAM/MobileSAM ONNX folder for refinement (optional)",
            behavior=QgsProcessingParameterFile.Folder, optional=True))

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Objects", QgsProcessing.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterRasterDestination(self.DENSE, "Dense score map", optional=True,
                                                                  createByDefault=False))

    def processAlgorithm(self, parameters, context, feedback):
        query = self.parameterAsString(parameters, self.QUERY, context)
        _, result = self.run_action(
            parameters, context, feedback, query=query,
            threshold=self.parameterAsString(parameters, self.THRESHOLD, context) or "auto",
            min_area_m2=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            negative=self.parameterAsString(parameters, self.NEGATIVE, context) or "",
            refine=self.parameterAsFile(parameters, self.REFINE, context) or "")
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, result["outputs"]["objects"], layer.crs(),
                            feedback)
        style_on_load(context, dest, style_objects)
        name_on_load(context, dest, f"Objects: {query.strip()}")
        out = {self.OUTPUT: dest}
        dense = self.parameterAsOutputLayer(parameters, self.DENSE, context)
        if dense:
            out[self.DENSE] = raster_to_destination(result["outputs"]["dense"], dense)
            name_on_load(context, out[self.DENSE], f"Dense score: {query.strip()}")
        return out
