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
    if "standout" in getattr(cls, "__dataclass_fields__", {}) and "standout" not in extra:
        extra["standout"] = settings.standout
    return cls(scene=raster_file(layer), scene_name=layer.name(), crs_wkt=layer.crs().toWkt(),
               bands=displayed_bands(layer), tile_size_m=settings.tile_size_m, model=settings.model(),
               device=settings.device, batch_size=settings.batch_size, rotations=settings.rotations,
               out_dir=str(settings.runs_folder()),
               **extra)


def area_raster(layer: QgsRasterLayer, extent, folder) -> str:
    """A VRT of the part of ``layer``'s file inside ``extent`` (a QgsRectangle in the layer's CRS), on the file's
    own pixel grid, written once into ``folder`` (an index of it is then reused): the 'visible extent' area.
    QGIS's own GDAL writes it (the QGIS process imports no rasterio). LayerSourceError when nothing overlaps."""
    from pathlib import Path

    from osgeo import gdal

    path = raster_file(layer)
    ds = gdal.Open(path)
    x0, dx, rx, y0, ry, dy = ds.GetGeoTransform()
    if rx or ry:
        raise LayerSourceError(f"layer '{layer.name()}' has a rotated grid; process the whole layer instead")
    cols = sorted(((extent.xMinimum() - x0) / dx, (extent.xMaximum() - x0) / dx))
    rows = sorted(((extent.yMaximum() - y0) / dy, (extent.yMinimum() - y0) / dy))
    c0, c1 = max(0, int(cols[0])), min(ds.RasterXSize, -int(-cols[1] // 1))
    r0, r1 = max(0, int(rows[0])), min(ds.RasterYSize, -int(-rows[1] // 1))
    if c1 <= c0 or r1 <= r0:
        raise LayerSourceError(f"the visible extent does not overlap layer '{layer.name()}'; pan to it or "
                               "process the whole layer")
    if (c0, r0, c1, r1) == (0, 0, ds.RasterXSize, ds.RasterYSize):
        return path
    out = Path(folder) / f"{Path(path).stem}_x{c0}_y{r0}_{c1 - c0}x{r1 - r0}.vrt"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("." + out.name)
        vrt = gdal.Translate(str(tmp), ds, format="VRT", srcWin=[c0, r0, c1 - c0, r1 - r0])
        if vrt is None:
            raise LayerSourceError(f"cannot write {out}")
        vrt = None  # closed: written
        tmp.replace(out)
    return str(out)
