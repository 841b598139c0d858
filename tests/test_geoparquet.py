"""outputs/geoparquet.py: GeoParquet 1.0 written from the spec, read back by geopandas, with our metadata."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from rsclip_geo.errors import IndexFileError
from rsclip_geo.outputs.geoparquet import has_metadata_key, read_json_metadata, schema_metadata, write_geoparquet


def _frame(crs="EPSG:32633"):
    geoms = [shapely.box(500000, 4000000, 500100, 4000100), shapely.Point(500050, 4000200), None]
    return gpd.GeoDataFrame({"label": ["a", "b", "c"], "score": [0.5, 0.25, 0.0]}, geometry=geoms, crs=crs)


def test_round_trip_keeps_rows_crs_and_geometry(tmp_path):
    frame = _frame()
    frame.attrs["anything"] = object()  # attrs never reach the file
    path = tmp_path / "f.parquet"
    write_geoparquet(frame, path, {b"ours": json.dumps({"k": 1}).encode()})
    back = gpd.read_parquet(path)
    assert back.crs == frame.crs
    assert list(back["label"]) == ["a", "b", "c"] and list(back["score"]) == [0.5, 0.25, 0.0]
    assert back.geometry.iloc[0].equals(frame.geometry.iloc[0]) and back.geometry.iloc[2] is None
    geo = json.loads(schema_metadata(path)[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["version"] == "1.0.0" and geo["primary_column"] == "geometry" and col["encoding"] == "WKB"
    assert col["geometry_types"] == ["Point", "Polygon"]
    assert col["bbox"] == [500000.0, 4000000.0, 500100.0, 4000200.0]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": 32633}
    assert read_json_metadata(path, b"ours", "ours", IndexFileError) == {"k": 1}


def test_extra_columns_and_row_groups(tmp_path):
    frame = _frame(crs=None)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(1, 7, dtype=np.float16)), 2)
    path = tmp_path / "e.parquet"
    write_geoparquet(frame, path, extra_columns={"embedding": emb}, row_group_size=2)
    assert pq.ParquetFile(path).metadata.num_row_groups == 2
    assert pq.read_table(path, columns=["embedding"]).column(0).to_pylist()[2] == [5.0, 6.0]
    assert json.loads(schema_metadata(path)[b"geo"])["columns"]["geometry"]["crs"] is None
    assert gpd.read_parquet(path).crs is None


def test_missing_key_and_non_parquet_are_named(tmp_path):
    path = tmp_path / "f.parquet"
    write_geoparquet(_frame(), path)
    with pytest.raises(IndexFileError, match=r"f\.parquet: a Parquet file but not an index \(no 'ours' metadata\)"):
        read_json_metadata(path, b"ours", "an index", IndexFileError)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(IndexFileError, match=r"junk\.parquet: not an index: not a readable Parquet file"):
        read_json_metadata(junk, b"ours", "an index", IndexFileError)
    assert has_metadata_key(junk, b"ours", unreadable=True) is True
    assert has_metadata_key(junk, b"ours", unreadable=False) is False
    assert has_metadata_key(path, b"geo", unreadable=False) is True
    bad = tmp_path / "bad.parquet"
    write_geoparquet(_frame(), bad, {b"ours": b"{not json"})
    with pytest.raises(IndexFileError, match="'ours' metadata is not JSON"):
        read_json_metadata(bad, b"ours", "an index", IndexFileError)
