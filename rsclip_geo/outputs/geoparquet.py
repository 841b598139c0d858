"""GeoParquet with our own key-value metadata: the one writer and reader behind indexes, batch partitions,
search hits and audit results.

Written from the GeoParquet 1.0 specification (WKB geometry column, PROJJSON CRS, the ``geo`` schema key)
with public pyarrow/shapely calls, not geopandas' private arrow helpers, so a geopandas release cannot change
what we write; geopandas, GDAL and QGIS read the files as ordinary GeoParquet.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

GEOPARQUET_VERSION = "1.0.0"
# shapely type ids -> the specification's geometry type names
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
               6: "MultiPolygon", 7: "GeometryCollection"}


def _geo_metadata(frame) -> dict:
    import numpy as np
    import shapely

    name = frame.geometry.name
    geoms = frame.geometry.values
    present = np.asarray(geoms[~geoms.isna()]) if len(geoms) else np.asarray([])
    types = sorted(set(shapely.get_type_id(present).tolist())) if len(present) else []
    column = {"encoding": "WKB", "geometry_types": [_TYPE_NAMES[t] for t in types]}
    column["crs"] = frame.crs.to_json_dict() if frame.crs is not None else None
    if len(present):
        column["bbox"] = [float(v) for v in shapely.total_bounds(present)]
    return {"version": GEOPARQUET_VERSION, "primary_column": name, "columns": {name: column}}


def frame_table(frame, metadata: Mapping[bytes, bytes] | None = None, extra_columns: Mapping | None = None):
    """A pyarrow Table of a GeoDataFrame (no index), WKB geometry and ``geo`` metadata, plus ours."""
    import pyarrow as pa
    import shapely

    name = frame.geometry.name
    plain = frame.drop(columns=[name]).reset_index(drop=True)
    plain.attrs = {}
    table = pa.Table.from_pandas(plain, preserve_index=False)
    wkb = shapely.to_wkb(frame.geometry.values, flavor="iso")
    table = table.append_column(name, pa.array(wkb, type=pa.binary()))  # object array of bytes/None, no list copy
    for column, values in (extra_columns or {}).items():
        table = table.append_column(column, values)
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(_geo_metadata(frame)).encode()
    meta.update(metadata or {})
    return table.replace_schema_metadata(meta)


def write_geoparquet(frame, path: str | os.PathLike, metadata: Mapping[bytes, bytes] | None = None, *,
                     extra_columns: Mapping | None = None, row_group_size: int | None = None,
                     compression: str = "zstd") -> None:
    """Write ``frame`` to ``path`` (callers pass the temporary file of ``writers.atomic_path``)."""
    import pyarrow.parquet as pq

    table = frame_table(frame, metadata, extra_columns)
    pq.write_table(table, path, compression=compression, row_group_size=row_group_size)


def schema_metadata(path: str | os.PathLike) -> dict[bytes, bytes]:
    """The file's key-value schema metadata; ValueError names the file when it is not readable Parquet."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.read_schema(path).metadata or {})
    except Exception as exc:  # pyarrow raises several unrelated types for a non-Parquet or truncated file
        raise ValueError(f"{path}: not a readable GeoParquet file ({exc})") from exc


def has_metadata_key(path: str | os.PathLike, key: bytes, unreadable: bool) -> bool:
    """Whether the file carries ``key``; ``unreadable`` is the answer for a file that is not readable Parquet."""
    try:
        return key in schema_metadata(path)
    except ValueError:
        return unreadable


def read_json_metadata(path: str | os.PathLike, key: bytes, what: str, error: type[Exception]) -> dict:
    """The JSON document stored under ``key``; ``error`` (naming the file and ``what`` it should be) otherwise."""
    try:
        meta = schema_metadata(path)
    except ValueError as exc:
        raise error(f"{path}: not {what}: not a readable Parquet file ({exc.__cause__})") from exc
    if key not in meta:
        raise error(f"{path}: a Parquet file but not {what} (no '{key.decode()}' metadata)")
    try:
        return json.loads(meta[key])
    except ValueError as exc:
        raise error(f"{path}: its '{key.decode()}' metadata is not JSON ({exc})") from exc
