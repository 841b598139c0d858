"""Worker outputs into Processing outputs: vector files into feature sinks, rasters to their destination,
and the plugin's styles for outputs Processing loads into the project."""

from __future__ import annotations

import shutil
from pathlib import Path

from qgis.core import (QgsFeature, QgsFeatureSink, QgsFields, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsRasterFileWriter, QgsVectorLayer)


def file_to_sink(alg, parameters, name: str, context, path: str, crs, feedback=None) -> str:
    """Copy every feature of the vector file ``path`` into the sink ``name`` (in ``crs``, the scene's)."""
    source = QgsVectorLayer(str(path), "worker output", "ogr")
    if not source.isValid():
        raise QgsProcessingException(f"{path}: QGIS cannot open the worker's output")
    keep = [i for i, f in enumerate(source.fields()) if f.name().lower() != "fid"]
    fields = QgsFields()
    for i in keep:
        fields.append(source.fields().at(i))
    sink, dest = alg.parameterAsSink(parameters, name, context, fields, source.wkbType(), crs)
    if sink is None:
        raise QgsProcessingException(alg.invalidSinkError(parameters, name))
    for feature in source.getFeatures():
        if feedback is not None and feedback.isCanceled():
            break
        out = QgsFeature(fields)
        attrs = feature.attributes()
        out.setAttributes([attrs[i] for i in keep])
        out.setGeometry(feature.geometry())
        sink.addFeature(out, QgsFeatureSink.FastInsert)
    return dest


def refuse_destinations_on(alg, parameters, scene: str) -> None:
    """No raster or file output of ``alg`` may be the scene it reads: the worker's result would be copied over it.

    Read from the raw parameter values, not parameterAsOutputLayer, which also queues the layer for loading."""
    import os

    from qgis.core import (QgsProcessingOutputLayerDefinition, QgsProcessingParameterFileDestination,
                           QgsProcessingParameterRasterDestination)

    for definition in alg.destinationParameterDefinitions():
        if not isinstance(definition, (QgsProcessingParameterRasterDestination, QgsProcessingParameterFileDestination)):
            continue
        value = parameters.get(definition.name())
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value = value.sink.staticValue()
        dest = str(value or "")
        if not dest or dest == "TEMPORARY_OUTPUT" or not os.path.exists(dest):
            continue
        if os.path.samefile(dest, scene):
            raise QgsProcessingException(f"{dest} ({definition.description()}): is the input scene; choose another "
                                         "file (an output never replaces an input)")


def raster_to_destination(path: str, dest: str) -> str:
    """The worker's GeoTIFF at ``dest``: copied when ``dest`` is a GeoTIFF, else translated by QGIS's GDAL."""
    if Path(dest).suffix.lower() in (".tif", ".tiff"):
        shutil.copyfile(path, dest)
        return dest
    from osgeo import gdal

    driver = QgsRasterFileWriter.driverForExtension(Path(dest).suffix)
    if not driver or gdal.Translate(dest, path, format=driver) is None:
        raise QgsProcessingException(f"{dest}: cannot write this raster format; choose a .tif")
    return dest


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Apply one of qgis_plugin.layers' styles to an output once Processing has loaded it."""

    def __init__(self, style, *args):
        super().__init__()
        self.style, self.args = style, args

    def postProcessLayer(self, layer, context, feedback):
        self.style(layer, *self.args)


_KEEP: list = []  # Processing holds post-processors by raw pointer: keep them alive


def style_on_load(context, dest: str, style, *args) -> None:
    if dest and context.willLoadLayerOnCompletion(dest):
        pp = StylePostProcessor(style, *args)
        _KEEP.append(pp)
        del _KEEP[:-20]
        context.layerToLoadOnCompletionDetails(dest).setPostProcessor(pp)


def name_on_load(context, dest: str, name: str) -> None:
    """The name an output gets in the layer tree (e.g. with the query in it), instead of the parameter's: two runs
    of one algorithm otherwise give two layers called the same."""
    if dest and context.willLoadLayerOnCompletion(dest):
        context.layerToLoadOnCompletionDetails(dest).name = name
