"""Processing: audit a land-cover polygon layer against a scene (rsclip_geo.audit in the worker)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterDistance,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterField, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterVectorLayer)

from ..audit_run import AuditParams
from .base import RsclipAlgorithm
from .outputs import file_to_sink, style_on_load

FLAGGED_RGB, KEPT_RGB = (230, 20, 60), (120, 120, 120)


def style_audit(layer) -> None:
    """Flagged polygons filled red with a thick outline, the others outlined in grey; the attribute table
    sorted by agreement, lowest (most doubtful) first."""
    from qgis.core import QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory
    from qgis.PyQt.QtCore import Qt

    def symbol(rgb, fill_alpha, width):
        r, g, b = rgb
        return QgsFillSymbol.createSimple({"color": f"{r},{g},{b},{fill_alpha}", "outline_color": f"{r},{g},{b},255",
                                           "outline_width": str(width), "outline_width_unit": "MM"})

    categories = [QgsRendererCategory(True, symbol(FLAGGED_RGB, 140, 0.8), "flagged: disagrees with the imagery"),
                  QgsRendererCategory(False, symbol(KEPT_RGB, 0, 0.3), "agrees (or not scored)")]
    layer.setRenderer(QgsCategorizedSymbolRenderer("flag", categories))
    config = layer.attributeTableConfig()
    config.setSortExpression('"agreement"')
    config.setSortOrder(Qt.AscendingOrder)
    layer.setAttributeTableConfig(config)
    layer.triggerRepaint()


class AuditLabelsAlgorithm(RsclipAlgorithm):
    """Scores every polygon of a land-cover layer against the scene: each polygon is looked at through up to
    'Windows per polygon' windows inside it (one centred window when it is smaller than a window) and every
    window is scored against every label of the field (CLIP zero-shot, through the prompt templates). Output:
    the polygons with agreement (probability of their own label), best_label, best_score, flag (the best label
    is another one and agreement is below 'Flag below') and n_windows; flagged polygons are drawn in red and
    the attribute table is sorted by agreement. Codes such as '21' need a label map (JSON: {"21": "developed
    land"}). The summary (agreement per class with 95 % intervals) is in the log and the output's metadata."""

    LABELS, FIELD, LABEL_MAP = "LABELS", "FIELD", "LABEL_MAP"
    FLAG_BELOW, MAX_WINDOWS, WINDOW_SIZE = "FLAG_BELOW", "MAX_WINDOWS", "WINDOW_SIZE"
    algorithm_name, display_name = "auditlabels", "Audit labels"
    action, params_class = "audit", AuditParams
    tiled = False  # windows are placed on the polygons: its own window size, no edge setting

    def add_own_parameters(self) -> None:
        self.addParameter(QgsProcessingParameterVectorLayer(self.LABELS, "Land-cover polygons",
                                                            [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(self.FIELD, "Label field", parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterFile(self.LABEL_MAP, "Label map (JSON: code -> words)",
                                                     extension="json", optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.FLAG_BELOW, "Flag below (agreement)",
                                                       QgsProcessingParameterNumber.Double, 0.3, minValue=0.0,
                                                       maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_WINDOWS, "Windows per polygon (at most)",
                                                       QgsProcessingParameterNumber.Integer, 16, minValue=1))
        self.addParameter(QgsProcessingParameterDistance(
            self.WINDOW_SIZE, "Window size in map units (0: the model's input size in pixels)", 0.0, self.INPUT,
            minValue=0.0))

    def add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Audited labels",
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):
        from qgis.core import QgsProcessingUtils

        labels = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        field = (self.parameterAsFields(parameters, self.FIELD, context) or [""])[0]
        if not field:
            raise QgsProcessingException("choose the label field")
        scene_layer, _ = self.scene_layer(parameters, context)
        window = self.map_units_to_px(scene_layer, self.parameterAsDouble(parameters, self.WINDOW_SIZE, context))
        labels_file = self.export_labels(labels, Path(QgsProcessingUtils.tempFolder()), context)
        _, result = self.run_action(parameters, context, feedback, labels=labels_file, label_field=field,
                                    label_map=self.parameterAsFile(parameters, self.LABEL_MAP, context) or "",
                                    flag_below=self.parameterAsDouble(parameters, self.FLAG_BELOW, context),
                                    max_windows=self.parameterAsInt(parameters, self.MAX_WINDOWS, context),
                                    window_px=window)
        dest = file_to_sink(self, parameters, self.OUTPUT, context, result["outputs"]["audit"], labels.crs(),
                            feedback)
        style_on_load(context, dest, style_audit)
        return {self.OUTPUT: dest}

    @staticmethod
    def export_labels(layer, folder: Path, context) -> str:
        """The layer as a GeoPackage the worker can read (any provider: file, memory, database), in its CRS."""
        import uuid

        from qgis.core import QgsVectorFileWriter

        path = folder / f"audit-labels-{uuid.uuid4().hex[:8]}.gpkg"
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName, options.layerName = "GPKG", "labels"
        written = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), context.transformContext(), options)
        if written[0] != QgsVectorFileWriter.NoError:
            raise QgsProcessingException(f"cannot export the layer {layer.name()} for the audit: {written[1]}")
        return str(path)
