"""Label audit: windows per unit, scoring, outputs and metadata, class rasters, CRS, and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from shapely.geometry import Polygon, box

import rsclip_geo
from rsclip_geo.tasks.audit import AUDIT_COLUMNS, audit, audit_class_raster, read_audit_summary, write_audit
from rsclip_geo.tasks.audit.windows import unit_windows
from rsclip_geo.cli import main
from rsclip_geo.errors import LabelError, OutputError, VectorInputError
from rsclip_geo.raster.tiling import TileSpec, plan_tiles
from rsclip_geo.outputs.writers import write_class_raster
from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff

BLOCK = 32  # px; 10 m pixels -> 320 m blocks; the tiny model's windows are 16 px
LAYOUT = [[RED, GREEN, BLUE], [GREEN, BLUE, RED], [BLUE, RED, GREEN]]
NAMES = {RED: "red", GREEN: "green", BLUE: "blue"}
ORIGIN = (500000.0, 5000000.0)


@pytest.fixture
def blocks(tmp_path):
    """A 96x96 px UTM scene of 3x3 colour blocks and one polygon per block labelled with its colour."""
    import geopandas as gpd

    scene = write_geotiff(tmp_path / "blocks.tif", colour_blocks(LAYOUT, BLOCK))
    geoms, labels = [], []
    for r, row in enumerate(LAYOUT):
        for c, colour in enumerate(row):
            x0, y0 = ORIGIN[0] + c * BLOCK * 10, ORIGIN[1] - r * BLOCK * 10
            geoms.append(box(x0, y0 - BLOCK * 10, x0 + BLOCK * 10, y0))
            labels.append(NAMES[colour])
    gdf = gpd.GeoDataFrame({"id": range(9), "cover": labels}, geometry=geoms, crs="EPSG:32633")
    return scene, gdf


def _wrong(gdf, positions, field="cover"):
    gdf = gdf.copy()
    for i in positions:
        gdf.loc[i, field] = {"red": "green", "green": "blue", "blue": "red"}[gdf.loc[i, field]]
    return gdf


# ---- windows ----------------------------------------------------------------------------------------------------
def test_unit_windows_grid_cap_centre_edge_and_outside():
    plan = plan_tiles(100, 80, Affine.identity(), None, TileSpec(size_px=10, edge="shift"), 10)
    whole = box(0, 0, 100, 80)  # 80 tiles: capped at 16, spread evenly from the first to the last
    wins = unit_windows(whole, plan, max_windows=16)
    assert len(wins) == 16 and wins[0] == (0, 0) and wins[-1] == (70, 90)
    assert len(unit_windows(whole, plan, max_windows=100)) == 80
    # 2x2 tiles fully inside; the tiles it only grazes (< half inside or centre outside) are not taken
    assert sorted(unit_windows(box(19, 29, 41, 51), plan)) == [(30, 20), (30, 30), (40, 20), (40, 30)]
    # smaller than a tile: one window centred on it
    assert unit_windows(box(44, 34, 48, 38), plan) == [(31, 41)]
    # at the scene edge: the centred window is moved back inside the scene
    assert unit_windows(box(96, 76, 100, 80), plan) == [(70, 90)]
    # partly outside: cut to the scene first; wholly outside: no window
    assert unit_windows(box(-50, -50, 3, 3), plan) == [(0, 0)]
    assert unit_windows(box(200, 200, 300, 300), plan) == []
    # an L-shaped (concave) unit whose centroid lies outside it: the window is centred on a point inside it
    ell = Polygon([(50, 10), (58, 10), (58, 12), (52, 12), (52, 18), (50, 18)])
    (row, col), = unit_windows(ell, plan)
    assert box(col, row, col + 10, row + 10).intersects(ell)


# ---- scoring and outputs ----------------------------------------------------------------------------------------
def test_wrong_labels_get_low_agreement_and_flags(blocks, tiny_model):
    scene, gdf = blocks
    labels = _wrong(gdf, [1, 5])
    result = audit(labels, scene, "cover", model=tiny_model)
    out = result.frame
    assert list(out["id"]) == list(range(9)) and list(out["cover"]) == list(labels["cover"])  # order, attributes
    assert set(AUDIT_COLUMNS) <= set(out.columns)
    assert (out["n_windows"] == 4).all()  # 32 px blocks, 16 px windows
    wrong = out.index.isin([1, 5])
    assert out.loc[wrong, "agreement"].max() < 0.2 < 0.8 < out.loc[~wrong, "agreement"].min()
    assert list(out.loc[wrong, "best_label"]) == list(gdf.loc[[1, 5], "cover"])  # the truth
    assert list(out["flag"]) == list(wrong)
    np.testing.assert_allclose(out.loc[~wrong, "best_score"], out.loc[~wrong, "agreement"])
    s = result.summary
    assert s.overall.n == 9 and s.overall.flagged == 2 and s.windows_encoded == 36
    assert s.overall.agree == pytest.approx(7 / 9)
    assert s.overall.agree_low < 7 / 9 < s.overall.agree_high
    assert s.overall.mean_low <= s.overall.mean <= s.overall.mean_high
    assert set(s.per_class) == {"red", "green", "blue"} and sum(c.n for c in s.per_class.values()) == 9
    assert out.crs == gdf.crs and out.geometry.geom_equals(gdf.geometry).all()


def test_flag_threshold_is_the_documented_rule(blocks, tiny_model):
    scene, gdf = blocks
    result = audit(_wrong(gdf, [1]), scene, "cover", model=tiny_model, flag_below=0.0)
    out = result.frame
    assert not out["flag"].any()  # agreement < 0 never holds
    assert out.loc[1, "best_label"] != out.loc[1, "cover"]


def test_crs_reprojection_gives_the_same_result(blocks, tiny_model):
    scene, gdf = blocks
    gdf = gdf.set_geometry(gdf.geometry.buffer(-40))  # keep clear of window edges: reprojection moves vertices
    utm = audit(_wrong(gdf, [2]), scene, "cover", model=tiny_model).frame
    wgs = audit(_wrong(gdf.to_crs("EPSG:4326"), [2]), scene, "cover", model=tiny_model).frame
    assert wgs.crs.to_epsg() == 4326  # output stays in the labels' CRS
    assert list(wgs["n_windows"]) == list(utm["n_windows"])
    np.testing.assert_allclose(wgs["agreement"], utm["agreement"], atol=1e-6)
    assert list(wgs["flag"]) == list(utm["flag"]) and wgs["flag"].sum() == 1


def test_cli_writes_gpkg_with_summary_metadata(blocks, tiny_bundle, tmp_path):
    import geopandas as gpd
    import pyogrio

    scene, gdf = blocks
    labels = tmp_path / "labels.gpkg"
    _wrong(gdf, [4]).to_file(labels, engine="pyogrio")
    out = tmp_path / "audited.gpkg"
    args = ["audit", str(labels), str(scene), "--label-field", "cover", "-o", str(out), "--model", str(tiny_bundle),
            "--device", "cpu"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "flag: best label is not the feature's own" in res.output
    back = gpd.read_file(out)
    assert list(back["id"]) == list(range(9)) and back["flag"].tolist() == [i == 4 for i in range(9)]
    summary = read_audit_summary(out)
    assert summary["overall"]["n"] == 9 and summary["overall"]["flagged"] == 1 and summary["field"] == "cover"
    assert "agreement [95% CI]" in pyogrio.read_info(out)["layer_metadata"]["DESCRIPTION"]
    before = out.read_bytes()
    res = CliRunner().invoke(main, args)  # exists: refused, left as it was
    assert res.exit_code == 1 and "already exists" in res.output and out.read_bytes() == before
    assert CliRunner().invoke(main, args + ["--overwrite"]).exit_code == 0


def test_parquet_output_keeps_summary(blocks, tiny_model, tmp_path):
    import geopandas as gpd

    scene, gdf = blocks
    result = audit(gdf, scene, "cover", model=tiny_model)
    out = result.frame
    path = write_audit(result, tmp_path / "a.parquet")
    assert read_audit_summary(path)["overall"]["n"] == 9
    assert result.summary.labels == "labels" and len(result) == 9  # a GeoDataFrame is named 'labels'
    same = result.write(tmp_path / "b.gpkg")  # the result writes itself the same way
    assert read_audit_summary(same) == read_audit_summary(path)
    assert list(gpd.read_parquet(path)["agreement"]) == pytest.approx(list(out["agreement"]))


def test_label_map_turns_codes_into_words(blocks, tiny_model, tmp_path):
    scene, gdf = blocks
    codes = {"red": 11, "green": 22, "blue": 33}
    gdf["code"] = [codes[c] for c in _wrong(gdf, [0])["cover"]]
    with pytest.raises(LabelError, match=r"numeric codes .*--label-map"):
        audit(gdf, scene, "code", model=tiny_model)
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"11": "red", "22": "green", "33": ["blue"]}))
    result = audit(gdf, scene, "code", model=tiny_model, label_map=label_map)
    out = result.frame
    assert out.loc[0, "best_label"] == "11" and bool(out.loc[0, "flag"]) and out["flag"].sum() == 1
    assert result.summary.label_words == {"22": "green", "33": "blue", "11": "red"}
    label_map.write_text(json.dumps({"11": "red", "22": "green"}))
    with pytest.raises(LabelError, match="missing from the label map: '33'"):
        audit(gdf, scene, "code", model=tiny_model, label_map=label_map)


# ---- class rasters ------------------------------------------------------------------------------------------------
def _class_grid() -> np.ndarray:
    index = {RED: 0, GREEN: 1, BLUE: 2}
    return np.array([[index[c] for c in row] for row in LAYOUT], np.uint8)


def test_class_raster_segments_names_file_and_sieve(blocks, tiny_bundle, tmp_path):
    import geopandas as gpd

    scene, _ = blocks
    grid = _class_grid()
    grid[0, 0] = 2  # the red block called blue (no blue neighbour: a segment of its own)
    classes = np.kron(grid, np.ones((4, 4), np.uint8))  # 80 m class pixels over the 10 m scene
    classes[11, 11] = 0  # a one-pixel red speck in a green block: merged into it by the sieve
    raster = write_geotiff(tmp_path / "classes.tif", classes, transform=Affine(80, 0, ORIGIN[0], 0, -80, ORIGIN[1]),
                           nodata=255)
    names = tmp_path / "names.txt"
    names.write_text("0: red\n1: green\n2: blue  # water\n")
    out = tmp_path / "audited.gpkg"
    res = CliRunner().invoke(main, ["audit", "--class-raster", str(raster), "--class-names", str(names), str(scene),
                                    "-o", str(out), "--min-segment-px", "3", "--model", str(tiny_bundle),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    back = gpd.read_file(out)
    assert len(back) == 9 and set(back["label"]) == {"red", "green", "blue"}
    corner = back[back.geometry.contains(gpd.points_from_xy([ORIGIN[0] + 160], [ORIGIN[1] - 160])[0])]
    assert corner["label"].tolist() == ["blue"] and corner["flag"].tolist() == [True]
    assert back["flag"].sum() == 1 and corner["best_label"].tolist() == ["red"]  # the one wrong segment
    summary = read_audit_summary(out)
    assert summary["sieved_px"] == 1 and summary["min_segment_px"] == 3


def test_class_raster_names_from_its_tags_or_refused(blocks, tiny_model, tmp_path):
    scene, _ = blocks
    grid = np.kron(_class_grid(), np.ones((BLOCK, BLOCK), np.uint8))
    crs, transform = "EPSG:32633", Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
    tagged = write_class_raster(tmp_path / "tagged.tif", grid, transform, crs, ["red", "green", "blue"])
    result = audit_class_raster(tagged, scene, model=tiny_model)
    out = result.frame
    assert len(out) == 9 and not out["flag"].any() and (out["agreement"] > 0.8).all()
    assert result.summary.min_segment_px == 64  # default: a quarter of a 16x16 px window, in class pixels
    assert len(result) == 9 and result.summary.labels == str(tagged)  # the class raster names the units
    assert result.summary.sieved_px == 0 and result.summary.n_features == 9
    plain = write_geotiff(tmp_path / "plain.tif", grid, crs=crs, transform=transform)
    with pytest.raises(LabelError, match="stores no class names.*--class-names"):
        audit_class_raster(plain, scene, model=tiny_model)
    result = audit_class_raster(plain, scene, model=tiny_model, label_map={0: "red", 1: "green", 2: "blue"})
    out = result.frame
    assert set(out["best_label"]) == {"0", "1", "2"}


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_unknown_field_lists_the_fields(blocks, tiny_model):
    scene, gdf = blocks
    with pytest.raises(VectorInputError, match="no field 'landcover'; its fields are: id, cover"):
        audit(gdf, scene, "landcover", model=tiny_model)


def test_empty_layer_no_overlap_single_label_and_points(blocks, tiny_model, tmp_path):
    from shapely.affinity import translate
    from shapely.geometry import Point

    scene, gdf = blocks
    empty = tmp_path / "empty.gpkg"
    gdf.iloc[:0].to_file(empty, engine="pyogrio")
    with pytest.raises(VectorInputError, match="empty.gpkg: the layer is empty"):
        audit(empty, scene, "cover", model=tiny_model)
    far = gdf.set_geometry(gdf.geometry.apply(lambda g: translate(g, 50_000)))
    with pytest.raises(VectorInputError, match="no feature overlaps the scene blocks.tif"):
        audit(far, scene, "cover", model=tiny_model)
    one = gdf.assign(cover="red")
    with pytest.raises(LabelError, match="single label"):
        audit(one, scene, "cover", model=tiny_model)
    points = gdf.set_geometry([Point(ORIGIN)] * 9)
    with pytest.raises(VectorInputError, match="feature 0 is a Point; an audit needs polygons"):
        audit(points, scene, "cover", model=tiny_model)


def test_invalid_geometry_is_repaired_and_reported(blocks, tiny_model):
    scene, gdf = blocks
    x0, y0 = ORIGIN[0] + 2 * BLOCK * 10, ORIGIN[1] - 2 * BLOCK * 10
    s = BLOCK * 10
    bowtie = Polygon([(x0, y0), (x0 + s, y0 - s), (x0 + s, y0), (x0, y0 - s)])  # self-intersecting
    assert not bowtie.is_valid
    gdf.loc[8, "geometry"] = bowtie
    result = audit(gdf, scene, "cover", model=tiny_model)
    out = result.frame
    assert out.loc[8, "audit_note"] == "geometry repaired" and out.geometry.is_valid.all()
    assert result.summary.repaired == [8] and "1 invalid geometries repaired" in result.summary.describe()
    assert out.loc[8, "n_windows"] >= 1 and out.loc[8, "best_label"] == "green"


def test_unscored_features_are_kept_with_a_note(blocks, tiny_model):
    from shapely.affinity import translate

    scene, gdf = blocks
    gdf.loc[0, "geometry"] = translate(gdf.loc[0, "geometry"], 50_000)
    gdf.loc[1, "cover"] = None
    result = audit(gdf, scene, "cover", model=tiny_model)
    out = result.frame
    assert len(out) == 9 and out.loc[0, "audit_note"] == "outside the scene" and out.loc[0, "n_windows"] == 0
    assert np.isnan(out.loc[0, "agreement"]) and not out.loc[0, "flag"]
    assert out.loc[1, "audit_note"] == "no label" and np.isnan(out.loc[1, "agreement"])
    assert out.loc[1, "best_label"] == "green"  # still says what the imagery shows
    assert result.summary.overall.n == 7
    cased = gdf.assign(cover=["Red"] + list(gdf["cover"][1:]))
    with pytest.raises(LabelError, match="read as the same label"):
        audit(cased, scene, "cover", model=tiny_model)


def test_windows_on_nodata_are_skipped_and_noted(blocks, tiny_model, tmp_path):
    scene, gdf = blocks
    data = colour_blocks(LAYOUT, BLOCK)
    data[:, :, : 2 * BLOCK] = 0  # the left two columns of blocks: nodata
    scene = write_geotiff(tmp_path / "holes.tif", data, nodata=0)
    left = gdf.iloc[[0, 1, 3, 4, 6, 7]]
    result = audit(left, scene, "cover", model=tiny_model)
    out = result.frame
    assert (out["n_windows"] == 0).all() and (out["audit_note"] == "no valid window (nodata)").all()
    assert out["agreement"].isna().all() and not out["flag"].any()
    s = result.summary
    assert s.overall.n == 0 and s.no_window == 6 and s.windows_skipped == 24
    path = write_audit(result, tmp_path / "holes.gpkg")  # NaN estimates are stored as null (strict JSON)
    assert read_audit_summary(path)["overall"]["mean"] is None


def test_cli_bad_inputs_leave_nothing_behind(blocks, tiny_bundle, tmp_path):
    scene, gdf = blocks
    labels = tmp_path / "labels.gpkg"
    gdf.to_file(labels, engine="pyogrio")
    two = tmp_path / "two.gpkg"
    gdf.to_file(two, layer="a", engine="pyogrio")
    gdf.to_file(two, layer="b", engine="pyogrio")
    model = ["--model", str(tiny_bundle), "--device", "cpu"]
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["audit", str(labels), str(scene), "--label-field", "nope", "-o", str(tmp_path / "o.gpkg")],
         "no field 'nope'; its fields are: id, cover"),
        (["audit", str(labels), str(scene), "--label-field", "cover", "-o", str(labels), "--overwrite"],
         "refusing to write over an input"),
        (["audit", str(labels), str(scene), "--label-field", "cover", "-o", str(scene), "--overwrite"],
         "refusing to write over an input"),
        (["audit", str(labels), str(scene), "--label-field", "cover", "-o", str(tmp_path / "o.txt")],
         "unsupported output extension"),
        (["audit", str(two), str(scene), "--label-field", "cover", "-o", str(tmp_path / "o.gpkg")],
         "holds 2 layers (a, b); choose one with --layer"),
        (["audit", str(tmp_path / "missing.gpkg"), str(scene), "--label-field", "cover", "-o",
          str(tmp_path / "o.gpkg")], "missing.gpkg: file does not exist"),
        (["audit", str(labels), str(scene), "-o", str(tmp_path / "o.gpkg")], "--label-field is required"),
        (["audit", str(labels), str(scene), "--label-field", "id", "-o", str(tmp_path / "o.gpkg")],
         "numeric codes"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(main, args + model)
        assert res.exit_code != 0 and message in res.output, (args, res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    res = CliRunner().invoke(main, ["audit", str(two), str(scene), "--label-field", "cover", "--layer", "b",
                                    "-o", str(tmp_path / "b.gpkg")] + model)
    assert res.exit_code == 0, res.output


def test_output_onto_an_input_is_refused_by_the_api(blocks, tiny_model, tmp_path):
    scene, gdf = blocks
    result = audit(gdf, scene, "cover", model=tiny_model)
    target = tmp_path / "labels.gpkg"
    gdf.to_file(target, engine="pyogrio")
    before = target.read_bytes()
    with pytest.raises(OutputError, match="refusing to write over an input"):
        write_audit(result, target, overwrite=True, inputs=[target, scene])
    assert target.read_bytes() == before


# ---- real data ----------------------------------------------------------------------------------------------------
def test_aid_mosaic_wrong_labels_get_lower_agreement(tmp_path):
    """The shipped model on real AID images (held-out): relabelled cells score lower than correct ones."""
    from tests.utils.audit_maps import cell_polygons
    from tests.utils.mosaic import AID_ROOT, build_mosaic, roc_auc

    if not AID_ROOT.is_dir():
        pytest.skip("AID not available")
    mosaic = build_mosaic(tmp_path / "mosaic.tif", seed=3)
    labels = cell_polygons(mosaic, n_wrong=4, seed=3)
    result = audit(labels, mosaic.path, "label", tile=TileSpec(size_px=150, edge="shift"))
    out = result.frame
    wrong = out["wrong"].to_numpy()
    assert (out["n_windows"] == 1).all()
    assert roc_auc(1 - out["agreement"].to_numpy(), wrong) >= 0.85
    assert out.loc[wrong, "agreement"].mean() < out.loc[~wrong, "agreement"].mean() - 0.4
    assert out.loc[out["flag"], "wrong"].mean() >= 0.75  # what is flagged is mostly what is wrong


def test_landsat_land_cover_polygons_smoke(shared_data, tmp_path):
    """The real Landsat scene (blue, green, red stored) and its 4 land-cover polygons through the CLI."""
    import geopandas as gpd

    for name in ("landsat8_224078_bgr.tif", "landsat8_224078_landcover_polygons.gpkg"):
        shutil.copy(shared_data / "scenes" / name, tmp_path / name)
    labels, out = tmp_path / "landsat8_224078_landcover_polygons.gpkg", tmp_path / "audit.gpkg"
    res = CliRunner().invoke(main, ["audit", str(labels), str(tmp_path / "landsat8_224078_bgr.tif"), "--label-field",
                                    "name", "--bands", "3,2,1", "--tile-size-m", "1500", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    src, back = gpd.read_file(labels), gpd.read_file(out)
    assert list(back["name"]) == list(src["name"]) == ["water", "crop", "tree", "developed"]
    assert back.crs == src.crs and back.geometry.geom_equals(src.geometry).all()
    assert (back["n_windows"] == 1).all()  # ~500 m polygons: one centred 1500 m window each
    assert back["agreement"].between(0, 1).all() and back["best_label"].isin(src["name"]).all()
    flag = (back["best_label"] != back["name"]) & (back["agreement"] < 0.3)
    assert back["flag"].tolist() == flag.tolist()
    summary = read_audit_summary(out)
    assert summary["overall"]["n"] == 4 and set(summary["per_class"]) == set(src["name"])
    assert summary["tile_width_px"] == 50 and summary["windows_encoded"] == 4


def test_public_api_exports():
    assert rsclip_geo.audit is audit and "audit" in rsclip_geo.__all__


def test_audit_never_imports_torch(blocks, tiny_bundle, tmp_path):
    import subprocess
    import sys
    import textwrap

    scene, gdf = blocks
    labels = tmp_path / "labels.gpkg"
    gdf.to_file(labels, engine="pyogrio")
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from rsclip_geo.cli import main
        r = CliRunner().invoke(main, ["audit", r"{labels}", r"{scene}", "--label-field", "cover", "--model",
                                      r"{tiny_bundle}", "-q", "-o", r"{tmp_path / 'o.gpkg'}"])
        assert r.exit_code == 0, r.output
        print("HEAVY:" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("HEAVY:"), out.stdout
