"""The units an audit scores: the polygons of a label layer, or the connected segments of a class raster.

Vector layers (GeoPackage, GeoParquet, GeoJSON, Shapefile, anything GDAL reads) are read as they are, in their
own CRS; invalid polygons are repaired with ``make_valid`` (keeping their polygonal parts) and reported.
Class rasters become polygons with ``rasterio.features.shapes`` after a ``sieve`` that merges segments smaller
than ``min_segment_px`` pixels into their largest neighbour (as ``gdal_sieve.py`` does).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import LabelError, RasterInputError, VectorInputError

log = logging.getLogger(__name__)

POLYGONAL = ("Polygon", "MultiPolygon")
PARQUET = (".parquet", ".geoparquet")


def read_label_layer(path: str | Path, layer: str | None = None):
    """A vector file's features as a GeoDataFrame (one layer: name it when the file holds several)."""
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise VectorInputError(f"{path}: file does not exist")
    try:
        if path.suffix.lower() in PARQUET:
            gdf = gpd.read_parquet(path)
        else:
            names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
            if layer is None and len(names) > 1:
                raise VectorInputError(f"{path}: holds {len(names)} layers ({', '.join(names)}); choose one "
                                       "with --layer")
            if layer is not None and layer not in names:
                raise VectorInputError(f"{path}: has no layer {layer!r} (layers: {', '.join(names)})")
            gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except VectorInputError:
        raise
    except Exception as exc:  # pyogrio/pyarrow raise many unrelated types for unreadable files
        raise VectorInputError(f"{path}: not a readable vector layer ({exc})") from exc
    if not hasattr(gdf, "geometry") or gdf.geometry.name not in gdf.columns:
        raise VectorInputError(f"{path}: has no geometry column")
    return gdf


def check_layer(gdf, field: str, where: str) -> None:
    """Non-empty, the label field exists (else the fields there are listed), polygons only."""
    if len(gdf) == 0:
        raise VectorInputError(f"{where}: the layer is empty (no features)")
    fields = [c for c in gdf.columns if c != gdf.geometry.name]
    if field not in fields:
        raise VectorInputError(f"{where}: no field {field!r}; its fields are: " + (", ".join(fields) or "(none)"))
    types = gdf.geometry.geom_type
    bad = types.notna() & ~types.isin(POLYGONAL + ("GeometryCollection",))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise VectorInputError(f"{where}: feature {first} is a {types.iloc[first]}; an audit needs polygons "
                               f"({int(bad.sum())} non-polygon features)")


def _polygonal(geom):
    """The polygonal part of a (repaired) geometry, or None when it has none."""
    import shapely
    from shapely.geometry import MultiPolygon

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in POLYGONAL:
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in POLYGONAL and not p.is_empty]
    polys = [q for p in parts for q in (p.geoms if p.geom_type == "MultiPolygon" else [p])]
    return MultiPolygon(polys) if len(polys) > 1 else polys[0] if polys else None


def repair_geometries(geoms) -> tuple[list, list[int]]:
    """make_valid on invalid geometries (keeping their polygonal parts): (geometries, positions repaired)."""
    import shapely

    out, repaired = [], []
    valid = shapely.is_valid(np.asarray(geoms, dtype=object))
    for i, (geom, ok) in enumerate(zip(geoms, valid)):
        if geom is not None and not geom.is_empty and not ok:
            geom = _polygonal(shapely.make_valid(geom))
            repaired.append(i)
        else:
            geom = _polygonal(geom)
        out.append(geom)
    return out, repaired


def _raster_class_names(ds) -> dict[int, str] | None:
    """Names stored by rsclip-geo's class rasters (CLASS_NAMES tag), or GDAL category names."""
    names = ds.tags().get("CLASS_NAMES")
    if names:
        try:
            return {i: str(n) for i, n in enumerate(json.loads(names))}
        except (ValueError, TypeError):
            pass
    band = ds.tags(1)
    found = {int(k[6:]): v for k, v in band.items() if k.startswith("CLASS_") and k[6:].isdigit()}
    return found or None


@dataclass
class RasterUnits:
    """A class raster's segments: ``frame`` (polygons with ``value`` and ``label``), the pixels whose class the
    sieve changed, and whether the labels are class names (else the values as text)."""

    frame: object  # geopandas.GeoDataFrame
    sieved_px: int
    named: bool


def raster_units(path: str | Path, class_names: dict[int, str] | None = None, min_segment_px: int = 1,
                 connectivity: int = 4) -> RasterUnits:
    """Connected segments of a class raster's band 1 as polygons (its CRS), columns ``value`` and ``label``.

    ``label`` is the class name (``class_names``, else names stored in the raster), or the value as text when
    there are none (a label map must then turn the codes into words). Nodata/masked pixels are no segment.
    """
    import geopandas as gpd
    import rasterio
    from rasterio import features
    from shapely.geometry import shape

    path = Path(path)
    if not path.exists():
        raise RasterInputError(f"{path}: class raster does not exist")
    try:
        with rasterio.open(path) as ds:
            if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
                raise RasterInputError(f"{path}: band 1 is {ds.dtypes[0]}; a class raster holds integer classes")
            data = ds.read(1)
            valid = ds.read_masks(1) > 0
            transform, crs = ds.transform, ds.crs
            stored = _raster_class_names(ds)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterInputError(f"{path}: not a readable raster ({exc})") from exc
    if not valid.any():
        raise RasterInputError(f"{path}: every pixel of the class raster is nodata")
    data = data.astype(np.int32) if data.dtype not in (np.uint8, np.int16, np.uint16, np.int32) else data
    sieved = data
    if min_segment_px > 1:
        sieved = features.sieve(data, size=int(min_segment_px), mask=valid, connectivity=connectivity)
    changed = int(np.count_nonzero((sieved != data) & valid))
    names = class_names if class_names is not None else stored
    present = sorted(int(v) for v in np.unique(sieved[valid]))
    if names is not None:
        unnamed = [v for v in present if v not in names]
        if unnamed:
            raise LabelError(f"{path}: class values {unnamed[:20]} have no name "
                             + ("in the class names file" if class_names is not None else "in the raster's tags"))
    values, geoms = [], []
    for geom, value in features.shapes(sieved, mask=valid, connectivity=connectivity, transform=transform):
        values.append(int(value))
        geoms.append(shape(geom))
    labels = [names[v] if names is not None else str(v) for v in values]
    gdf = gpd.GeoDataFrame({"value": np.asarray(values, np.int64), "label": labels}, geometry=geoms, crs=crs)
    log.info("%s: %d segments (%d pixels merged by the sieve of %d px)", path.name, len(gdf), changed,
             min_segment_px)
    return RasterUnits(gdf, changed, names is not None)
