"""From a QGIS raster layer to what the core reads: a local file path and the bands on screen.

The core reads pixels with rasterio, never through QGIS, so only layers backed by
a local file that GDAL opens can be processed (not WMS/XYZ tiles, not virtual or
in-memory rasters, not /vsicurl/ URLs).
"""

from __future__ import annotations

import os

from qgis.core import (QgsMapLayer, QgsMultiBandColorRenderer, QgsProviderRegistry, QgsRasterLayer,
                       QgsSingleBandGrayRenderer)

FILE_ONLY = "only file-based GDAL rasters are supported"


class LayerSourceError(ValueError):
    """The layer cannot be read by the core (message says why and what to do)."""


def raster_file(layer: QgsMapLayer | None) -> str:
    """The local file behind ``layer``, or a LayerSourceError whose message starts with FILE_ONLY."""
    if layer is None:
        raise LayerSourceError("select a raster layer in the Layers panel first")
    if not isinstance(layer, QgsRasterLayer):
        raise LayerSourceError(f"layer '{layer.name()}' is not a raster layer; select a raster (GeoTIFF) layer")
    provider = layer.providerType()
    hint = "; save it as a GeoTIFF first (right-click > Export > Save As...) and run on that file"
    if provider != "gdal":
        raise LayerSourceError(f"{FILE_ONLY}: layer '{layer.name()}' comes from the '{provider}' provider{hint}")
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    if not path or path.startswith("/vsi") or "://" in path or not os.path.isfile(path):
        raise LayerSourceError(f"{FILE_ONLY}: layer '{layer.name()}' is not a local file ({path or 'no path'}){hint}")
    if parts.get("layerName"):
        raise LayerSourceError(f"{FILE_ONLY}: layer '{layer.name()}' is one table of a container file ({path}){hint}")
    return path


def displayed_bands(layer: QgsRasterLayer) -> tuple[int, ...] | None:
    """The bands the layer shows as R,G,B (or one grey band): what you see is what the model sees."""
    renderer = layer.renderer()
    if isinstance(renderer, QgsMultiBandColorRenderer):
        bands = (renderer.redBand(), renderer.greenBand(), renderer.blueBand())
        if all(b > 0 for b in bands):
            return bands
    if isinstance(renderer, QgsSingleBandGrayRenderer) and renderer.grayBand() > 0:
        return (renderer.grayBand(),)
    return None


def run_params(cls, layer, settings, **extra):
    """A task's parameters for ``layer`` with the plugin settings (model, device, batch, tile, output)."""
    return cls(scene=raster_file(layer), scene_name=layer.name(), crs_wkt=layer.crs().toWkt(),
               bands=displayed_bands(layer), tile_size_m=settings.tile_size_m, model=settings.model(),
               device=settings.device, batch_size=settings.batch_size, out_dir=str(settings.runs_folder()),
               **extra)
