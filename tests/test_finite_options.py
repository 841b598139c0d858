"""NaN and +-inf in float options and API arguments give clear errors naming the option (issue 15, defect 7)."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import rsclip_geo
from rsclip_geo.cli import main
from rsclip_geo.tasks.heatmap import selo_specs
from rsclip_geo.raster.tile_stream import check_max_invalid
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import RED, colour_blocks, write_geotiff

CASES = [  # command args before the option, option, values
    (("tile-classify", "S", "--labels", "a,b"), "--tile-size-m", ("nan", "inf")),
    (("tile-classify", "S", "--labels", "a,b"), "--overlap", ("nan", "-inf")),
    (("tile-classify", "S", "--labels", "a,b"), "--min-score", ("nan",)),
    (("tile-classify", "S", "--labels", "a,b"), "--max-invalid", ("nan", "NaN")),
    (("heatmap", "S", "q", "-o", "h.tif"), "--overlap", ("nan",)),
    (("heatmap", "S", "q", "-o", "h.tif"), "--resolution-m", ("nan", "inf")),
    (("heatmap", "S", "q", "-o", "h.tif"), "--cell", ("nan", "inf")),
    (("heatmap", "S", "q", "-o", "h.tif"), "--smooth", ("nan", "inf")),
    (("heatmap", "S", "q", "-o", "h.tif"), "--scales", ("nan", "16,nan", "inf")),
    (("heatmap", "S", "q", "-o", "h.tif"), "--scales-m", ("nan,100",)),
    (("search", "S", "q", "-o", "h.gpkg"), "--negative-weight", ("nan", "inf")),
    (("search", "S", "q", "-o", "h.gpkg"), "--scales", ("nan", "nan,0.4")),
    (("index", "S"), "--scales-m", ("inf",)),
    (("count", "S", "car", "-o", "c.gpkg"), "--tile-size-m", ("nan",)),
    (("segment", "S", "q", "-o", "h.gpkg"), "--threshold", ("nan", "-inf")),
]


@pytest.mark.parametrize("args,option,value", [(a, o, v) for a, o, vs in CASES for v in vs])
def test_cli_refuses_non_finite(tmp_path, args, option, value):
    scene = write_geotiff(tmp_path / "s.tif", colour_blocks([[RED, RED]], 16))
    argv = [str(scene) if a == "S" else str(tmp_path / a) if a.endswith((".tif", ".gpkg")) else a for a in args]
    result = CliRunner().invoke(main, [*argv, option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output
    assert "finite" in result.output, result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("h.*")) and not list(tmp_path.glob("c.*"))


@pytest.mark.parametrize("make", [
    lambda: TileSpec(size_px=math.nan), lambda: TileSpec(size_px=math.inf), lambda: TileSpec(size_px=True),
    lambda: TileSpec(size_m=math.nan), lambda: TileSpec(size_m=math.inf), lambda: TileSpec(overlap=math.nan),
    lambda: selo_specs([math.nan]), lambda: selo_specs([math.inf]), lambda: selo_specs(None, [math.nan]),
    lambda: selo_specs([32], overlap=math.nan), lambda: check_max_invalid(math.nan),
])
def test_api_refuses_non_finite(make):
    with pytest.raises(rsclip_geo.OptionError, match=r"(?i)tile size|window|overlap|max_invalid|finite"):
        make()


def test_api_search_and_classify_refuse_non_finite(tmp_path, tiny_model):
    scene = write_geotiff(tmp_path / "s.tif", colour_blocks([[RED, RED]], 16))
    for weight in (math.nan, math.inf, -1.0):
        with pytest.raises(rsclip_geo.OptionError, match="negative_weight must be a finite number >= 0"):
            rsclip_geo.search(scene, "red", negative="blue", negative_weight=weight, model=tiny_model)
    with pytest.raises(rsclip_geo.OptionError, match="min_score"):
        rsclip_geo.tile_classify(scene, ["red", "blue"], model=tiny_model, min_score=math.nan)
    for kw in ({"resolution_m": math.nan}, {"cell": math.inf}, {"sigma": math.nan}):
        with pytest.raises(rsclip_geo.OptionError):
            rsclip_geo.heatmap(scene, "red", scales=[16], model=tiny_model, use_index=False, **kw)
    assert not list(tmp_path.glob("*.parquet"))
