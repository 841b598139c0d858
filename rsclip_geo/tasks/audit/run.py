"""Label audit: which polygons of a land-cover layer (or segments of a class raster) disagree with the imagery.

Each unit (feature, or connected segment of a class raster) is reprojected to
the scene's CRS and looked at through up to ``max_windows`` windows of the
scene's tile plan (see ``audit_windows``). Every window is scored against every
label of the field through the prompt templates, exactly as ``tile_classify``
scores tiles (``ClipModel.class_embeddings`` + ``probabilities``: a softmax over
the field's labels), and a unit's label probabilities are the mean over its
windows. Columns added to every input feature (input order, attributes and CRS
kept; invalid geometries repaired with ``make_valid``):

- ``agreement``: the probability of the unit's own label (0-1), NaN when unscored;
- ``best_label`` / ``best_score``: the label the imagery supports most, and its probability;
- ``flag``: True when ``best_label`` is not the unit's own label *and* ``agreement < flag_below`` (0.3);
- ``n_windows``: windows scored; ``audit_note``: why a unit is not scored, or that its geometry was repaired.

``audit`` returns an AuditResult: that frame and an AuditSummary (overall and per-class agreement with
95 % intervals); ``write_audit`` (output.py) stores the summary in the output file's metadata.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Mapping, Sequence

import numpy as np

from .labels import Vocabulary, build_vocabulary, label_key, read_label_map
from .output import AuditResult
from .summary import Agreement, AuditSummary
from .units import check_layer, read_label_layer, repair_geometries
from .windows import encode_windows, to_pixels, unit_windows
from ...runtime.encoder import ClipModel, load_model
from ...errors import LabelError, OptionError, RasterInputError, VectorInputError
from ...runtime.prompts import Label
from ...raster.scene import Scene
from ...embeddings.encode import ProgressCallback
from ...raster.tiling import TileSpec

log = logging.getLogger(__name__)

AUDIT_COLUMNS = ("agreement", "best_label", "best_score", "flag", "n_windows", "audit_note")
FLAG_BELOW = 0.3
MAX_WINDOWS = 16


def _label_map(label_map) -> dict[str, Label] | None:
    if label_map is None:
        return None
    if isinstance(label_map, (str, os.PathLike)):
        return read_label_map(label_map)
    return {label_key(k): v if isinstance(v, Label) else Label(str(v)) for k, v in dict(label_map).items()}


def audit(labels, scene: str | os.PathLike | Scene, label_field: str, model: ClipModel | str | None = None,
          tile: TileSpec | None = None, label_map: str | os.PathLike | Mapping | None = None,
          flag_below: float = FLAG_BELOW, max_windows: int = MAX_WINDOWS, min_inside: float = 0.5,
          max_invalid: float = 0.5, templates: Sequence[str] | None = None, layer: str | None = None,
          bands: Sequence[int] | None = None, progress: ProgressCallback | None = None,
          **scene_options) -> AuditResult:
    """Audit ``labels`` (a vector file or GeoDataFrame of polygons, any CRS) against ``scene``.

    Returns an AuditResult: the features with the audit columns (see the module docstring) and the summary.
    """
    if hasattr(labels, "geometry"):
        gdf, where = labels, "labels"
    else:
        gdf, where = read_label_layer(labels, layer), str(labels)
    return _audit(gdf, where, scene, label_field, model, tile, label_map, flag_below, max_windows, min_inside,
                  max_invalid, templates, bands, progress, **scene_options)


def _audit(gdf, where: str, scene, label_field: str, model=None, tile=None, label_map=None,
           flag_below: float = FLAG_BELOW, max_windows: int = MAX_WINDOWS, min_inside: float = 0.5,
           max_invalid: float = 0.5, templates=None, bands=None, progress=None, **scene_options) -> AuditResult:
    """``audit`` of the GeoDataFrame ``gdf``, named ``where`` in messages."""
    if not 0 <= flag_below <= 1:
        raise OptionError(f"flag_below must be in [0, 1], got {flag_below}")
    if max_windows < 1:
        raise OptionError(f"max_windows must be >= 1, got {max_windows}")
    check_layer(gdf, label_field, where)
    keys = [label_key(v) for v in gdf[label_field]]
    vocab = build_vocabulary(keys, label_field, _label_map(label_map), where)
    model = model if isinstance(model, ClipModel) else load_model(model)
    class_emb = model.class_embeddings(list(vocab.labels), templates)  # label errors before any reading
    geoms, repaired = repair_geometries(list(gdf.geometry))
    for i in repaired:
        log.warning("%s: feature %d has an invalid geometry; repaired with make_valid", where, i)
    own_scene = not isinstance(scene, Scene)
    sc = Scene(scene, bands=bands, **scene_options) if own_scene else scene
    try:
        plan = sc.plan(tile or TileSpec(edge="shift"), model.bundle.image.size)
        start = time.perf_counter()
        px = _in_scene_pixels(geoms, gdf.crs, sc, where)
        windows = [unit_windows(g, plan, max_windows, min_inside) for g in px]
        if not any(windows):
            raise VectorInputError(_no_overlap(geoms, gdf.crs, sc, where))
        enc = encode_windows(sc, plan, [k for w in windows for k in w], model, max_invalid, progress)
        probs = model.probabilities(enc.embeddings, class_emb) if len(enc.embeddings) else None
        columns = _unit_scores(windows, enc.row, probs, keys, vocab, flag_below)
    finally:
        if own_scene:
            sc.close()
    out = _with_columns(gdf, geoms, columns, repaired, where)
    summary = _summary(out, columns, px, plan, vocab, where, sc, label_field, flag_below, repaired)
    summary.windows_encoded, summary.windows_skipped = len(enc.row), enc.skipped
    summary.seconds, summary.provider, summary.model = time.perf_counter() - start, model.provider, model.run_label
    log.info(summary.describe())
    return AuditResult(out, summary)


def audit_class_raster(class_raster: str | os.PathLike, scene: str | os.PathLike, model: ClipModel | str | None = None,
                       class_names: str | os.PathLike | Mapping[int, str] | None = None,
                       min_segment_px: int | None = None, tile: TileSpec | None = None, bands=None,
                       stretch: str = "auto", zero_invalid="auto", **audit_options) -> AuditResult:
    """Audit a class raster: its connected segments (after a sieve of ``min_segment_px`` class pixels; default:
    a quarter of one window's ground area) are the units, with columns ``value`` and ``label`` (the class name,
    or the value as text when there are no names: pass ``label_map`` then)."""
    from .labels import read_class_names
    from .units import raster_units

    names = read_class_names(class_names) if isinstance(class_names, (str, os.PathLike)) else class_names
    model = model if isinstance(model, ClipModel) else load_model(model)
    with Scene(scene, bands=bands, stretch=stretch, zero_invalid=zero_invalid) as sc:
        plan = sc.plan(tile or TileSpec(edge="shift"), model.bundle.image.size)
        if min_segment_px is None:
            min_segment_px = _quarter_window_px(class_raster, sc, plan)
        units = raster_units(class_raster, names, min_segment_px)
        if not units.named and audit_options.get("label_map") is None:
            raise LabelError(f"{class_raster}: the class raster stores no class names, and its values are codes "
                             "the model cannot read; pass class names (--class-names FILE) or a label map "
                             "(--label-map FILE.json)")
        result = _audit(units.frame, str(class_raster), sc, "label", model=model, tile=tile, **audit_options)
    result.summary.min_segment_px = int(min_segment_px)
    result.summary.sieved_px = int(units.sieved_px)
    return result


def _quarter_window_px(class_raster, sc: Scene, plan) -> int:
    """A quarter of one window's ground area, in class-raster pixels (at least 1)."""
    import rasterio

    from ...raster.tiling import pixel_size_m

    def pixel_area(transform, crs, width, height):
        try:
            px, py = pixel_size_m(transform, crs, width, height)
            return px * py
        except Exception:  # no CRS / no ellipsoid: pixel units
            return abs(transform.determinant)

    try:
        with rasterio.open(class_raster) as ds:
            class_px = pixel_area(ds.transform, ds.crs, ds.width, ds.height)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterInputError(f"{class_raster}: not a readable class raster ({exc})") from exc
    window = plan.tile_width * plan.tile_height * pixel_area(sc.transform, sc.crs, sc.width, sc.height)
    return max(1, round(window / 4 / max(class_px, 1e-12)))


def _in_scene_pixels(geoms, crs, sc: Scene, where: str) -> list:
    import geopandas as gpd

    if (crs is None) != (sc.crs is None):
        raise VectorInputError(f"{where}: has no CRS" if crs is None else
                               f"{sc.path}: the scene has no CRS, so labels in {crs.name} cannot be placed on it")
    series = gpd.GeoSeries(geoms, crs=crs)
    if crs is not None and not series.crs.equals(sc.crs):
        series = series.to_crs(sc.crs)
    return [None if g is None or g.is_empty else to_pixels(g, sc.transform) for g in series]


def _no_overlap(geoms, crs, sc: Scene, where: str) -> str:
    import geopandas as gpd
    from rasterio.transform import array_bounds

    bounds = gpd.GeoSeries([g for g in geoms if g is not None], crs=crs)
    bounds = bounds.to_crs(sc.crs).total_bounds if crs is not None and sc.crs is not None else bounds.total_bounds
    scene_bounds = array_bounds(sc.height, sc.width, sc.transform)
    scene_bounds = (scene_bounds[0], scene_bounds[1], scene_bounds[2], scene_bounds[3])
    fmt = lambda b: "(" + ", ".join(f"{v:.6g}" for v in b) + ")"  # noqa: E731
    return (f"{where}: no feature overlaps the scene {sc.path.name}: labels {fmt(bounds)} vs scene "
            f"{fmt(scene_bounds)} (xmin, ymin, xmax, ymax in {sc.crs.to_string() if sc.crs else 'pixels'})")


def _unit_scores(windows, rows, probs, keys, vocab: Vocabulary, flag_below: float) -> dict:
    n = len(windows)
    index = vocab.index()
    agreement = np.full(n, np.nan, np.float32)
    best_score = np.full(n, np.nan, np.float32)
    best = np.full(n, None, dtype=object)
    n_windows = np.zeros(n, np.int32)
    for i, wins in enumerate(windows):
        scored = [rows[k] for k in wins if k in rows]
        n_windows[i] = len(scored)
        if not scored:
            continue
        p = probs[scored].mean(axis=0)
        top = int(np.argmax(p))
        best[i], best_score[i] = vocab.keys[top], p[top]
        if keys[i] is not None:
            agreement[i] = p[index[keys[i]]]
    flag = np.array([b is not None and k is not None and b != k and a < flag_below
                     for b, k, a in zip(best, keys, agreement)], dtype=bool)
    return {"agreement": agreement, "best_label": best, "best_score": best_score, "flag": flag,
            "n_windows": n_windows, "_windows": windows, "_keys": keys}


def _with_columns(gdf, geoms, columns: dict, repaired: list[int], where: str):
    import geopandas as gpd

    out = gdf.copy()
    clash = [c for c in AUDIT_COLUMNS if c in out.columns]
    if clash:
        log.warning("%s: replacing the existing columns %s with this audit's", where, ", ".join(clash))
        out = out.drop(columns=clash)
    out = out.set_geometry(gpd.GeoSeries(geoms, crs=gdf.crs, index=gdf.index))
    notes = []
    for i, (wins, n_win, key, geom) in enumerate(zip(columns["_windows"], columns["n_windows"], columns["_keys"],
                                                    geoms)):
        note = ["empty geometry" if geom is None else "outside the scene" if not wins else
                "no valid window (nodata)" if n_win == 0 else ""]
        note += ["no label" if key is None else "", "geometry repaired" if i in repaired else ""]
        notes.append("; ".join(n for n in note if n))
    for name in AUDIT_COLUMNS[:-1]:
        out[name] = columns[name]
    out["audit_note"] = notes
    return out


def _summary(out, columns, px, plan, vocab: Vocabulary, where, sc, field, flag_below, repaired) -> AuditSummary:
    from shapely.geometry import box

    frame = box(0, 0, plan.scene_width, plan.scene_height)
    area = np.array([g.intersection(frame).area if g is not None else 0.0 for g in px])
    keys = np.array(columns["_keys"], dtype=object)
    scored = (columns["n_windows"] > 0) & np.array([k is not None for k in keys])
    own_best = columns["best_label"] == keys

    def stats(mask):
        return Agreement.of(columns["agreement"][mask], own_best[mask], columns["flag"][mask], area[mask])

    s = AuditSummary(labels=where, scene=str(sc.path), field=field, n_features=len(out), flag_below=flag_below,
                     repaired=list(repaired), tile_width_px=plan.tile_width, tile_height_px=plan.tile_height)
    s.overall = stats(scored)
    s.per_class = {k: stats(scored & (keys == k)) for k in vocab.keys if np.any(scored & (keys == k))}
    s.label_words = {k: lab.name if lab.prompts is None else " | ".join(lab.prompts)
                     for k, lab in zip(vocab.keys, vocab.labels)}
    notes = out["audit_note"]
    s.outside = int(notes.str.contains("outside the scene").sum())
    s.no_window = int(notes.str.contains("no valid window").sum())
    s.no_label = int(notes.str.contains("no label").sum())
    return s
