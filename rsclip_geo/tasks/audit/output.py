"""Audit outputs: the audited features with their summary as file metadata, written atomically, never onto an input.

GeoPackage: layer metadata ``RSCLIP_GEO_AUDIT`` (the summary as JSON) and the printed summary as the layer
description; GeoParquet: the same key in the schema metadata; GeoJSON: the description only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .summary import AuditSummary
from ...errors import VectorInputError
from ...outputs.guard import check_outputs_apart
from ...outputs.writers import VECTOR_DRIVERS, check_output, write_vector

METADATA_KEY = "RSCLIP_GEO_AUDIT"  # GDAL metadata keys: no ":" (GDAL reads "k:v" as domain k)


@dataclass
class AuditResult:
    """An audit: ``frame`` (the input features, in input order, with the audit columns) and its ``summary``."""

    frame: object = field(repr=False)  # geopandas.GeoDataFrame
    summary: AuditSummary

    def __len__(self) -> int:
        return len(self.frame)

    def write(self, path: str | os.PathLike, overwrite: bool = False,
              inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
        return write_audit(self, path, overwrite, inputs)


def check_audit_output(path: str | os.PathLike, overwrite: bool = False,
                       inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Fail before any work when ``path`` cannot be written, exists (without overwrite) or is an input
    (whatever ``overwrite`` says: the same path, a link to it, the file in a GDAL name)."""
    check_outputs_apart({"-o": path}, [p for p in inputs if p is None or not hasattr(p, "geometry")])
    return check_output(path, overwrite, suffixes=tuple(VECTOR_DRIVERS))


def write_audit(result: AuditResult, path: str | os.PathLike, overwrite: bool = False,
                inputs: Sequence[str | os.PathLike | None] = ()) -> Path:
    """Write an audit's frame (.gpkg/.parquet/.geojson) with its summary as metadata; never onto an input.

    GeoPackage: layer metadata ``RSCLIP_GEO_AUDIT`` (JSON) + the printed summary as layer description;
    GeoParquet: the same key in the schema metadata; GeoJSON: the description only.
    """
    check_audit_output(path, overwrite, inputs)
    summary = result.summary
    meta = {METADATA_KEY: json.dumps(summary.to_dict(), allow_nan=False)}
    return write_vector(result.frame, path, overwrite=overwrite, metadata=meta, description=summary.describe())


def read_audit_summary(path: str | os.PathLike) -> dict:
    """The summary stored by ``write_audit`` in a GeoPackage or GeoParquet file."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".geoparquet"):
        from ...outputs.geoparquet import schema_metadata

        try:
            raw = schema_metadata(path).get(METADATA_KEY.encode())
        except ValueError as exc:
            raise VectorInputError(str(exc)) from exc
    else:
        import pyogrio

        raw = (pyogrio.read_info(path).get("layer_metadata") or {}).get(METADATA_KEY)
    if raw is None:
        raise VectorInputError(f"{path}: holds no audit summary ({METADATA_KEY!r} metadata)")
    return json.loads(raw)
