"""``rsclip-geo segment``: polygons of the objects a text query names, from the model's dense head."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OptionError
from ..outputs.guard import check_outputs_apart, model_files, scene_caches
from ..outputs.writers import VECTOR_DRIVERS, check_output
from .options import FiniteFloatRange, ProgressBar, model_options, read_options, rotations_option


def _threshold(ctx, param, value):
    from ..tasks.segment import parse_threshold

    try:
        return parse_threshold("auto" if value is None else value)
    except OptionError as exc:
        raise click.BadParameter(f"{exc} (a score, cosine units)") from None


@click.command("segment")
@click.argument("scene", type=click.Path(dir_okay=False))
@click.argument("query")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Polygons (.gpkg, .parquet, .geojson) with score, score_mean, area_m2 per object.")
@click.option("--raster", type=click.Path(dir_okay=False), default=None,
              help="Also write the dense score map (.tif, COG on the scene's grid, NaN = no data).")
@click.option("--threshold", callback=_threshold, default="auto", show_default=True, metavar="auto|X",
              help="Score threshold: auto = the model's calibrated threshold (model.json dense.threshold) for a query "
                   "without --negative/--raw, else Otsu; otsu = Otsu on the scene's scores (always finds its best "
                   "areas); or a number.")
@click.option("--min-area-m2", type=FiniteFloatRange(min=0), default=None, metavar="A",
              help="Drop polygons smaller than A m2 [half a dense cell].")
@click.option("--negative", multiple=True, help="Text to steer away from (repeatable), as in `search`.")
@click.option("--negative-weight", type=FiniteFloatRange(min=0), default=0.5, show_default=True)
@click.option("--raw", is_flag=True, help="Embed the query as written instead of through the prompt templates.")
@click.option("--scale", type=FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Scene pixels per model pixel (2 reads the scene at half resolution: larger objects).")
@click.option("--window", type=click.IntRange(min=1), default=None, metavar="PX",
              help="Dense window side in model pixels (default: the bundle's dense.window: 128 for the default model).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Overlap of neighbouring windows of the main grid (0.5: every cell scored in up to 4 windows and "
                   "averaged, ~3x slower than the default).")
@click.option("--stagger/--no-stagger", default=True, show_default=True,
              help="Add a second window grid offset by half a step in both axes: each cell seen from two windows "
                   "(--no-stagger --overlap 0: fastest, seams at window edges).")
@click.option("--no-index", is_flag=True,
              help="Neither reuse nor save the scene's dense cells (scene.tif.rsclip-dense.npy/.json: the query-free "
                   "part of the work, kept so the next query on the scene skips the encoder).")
@click.option("--no-split", is_flag=True, help="Keep touching objects as one polygon (no split at local maxima).")
@click.option("--refine", "refine", type=click.Path(file_okay=False), default=None, metavar="SAM_DIR",
              help="Refine each object with a SAM/MobileSAM ONNX pair in SAM_DIR (see README).")
@click.option("--overwrite", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@read_options
@model_options
@rotations_option
def segment_command(scene, query, output, raster, threshold, min_area_m2, negative, negative_weight, raw, scale,
                    window, overlap, stagger, no_index, no_split, refine, overwrite, quiet, model, scene_options,
                    max_invalid):
    """Find the objects QUERY names in SCENE and write them as polygons (one per object)."""
    from ..tasks.segment import segment

    if not query.strip():
        raise click.BadParameter("empty query; give the objects to find, e.g. 'storage tanks'", param_hint="QUERY")
    sam_files = sorted(Path(refine).glob("*.onnx")) if refine else []
    check_outputs_apart({"-o/--output": output, "--raster": raster},  # --raster over the scene was once allowed
                        [scene, *scene_caches([scene]), *sam_files, *model_files(model)])
    check_output(output, overwrite, suffixes=tuple(VECTOR_DRIVERS))
    if raster:
        check_output(raster, overwrite, suffixes=(".tif", ".tiff"))
    bar = ProgressBar("windows", quiet)
    try:
        result = segment(scene, query, model=model, threshold=threshold, min_area_m2=min_area_m2,
                         negative=list(negative), negative_weight=negative_weight, raw=raw, scale=scale,
                         window=window, overlap=overlap, staggered=stagger, use_index=not no_index,
                         split=not no_split, refine=refine, max_invalid=max_invalid, progress=bar, **scene_options)
    finally:
        bar.close()
    if raster:
        result.dense.write(raster, overwrite=overwrite)
    result.write(output, overwrite=overwrite)
    if not quiet:
        s = result.stats
        source = {"reused": " (cells reused from the scene's dense cache)", "saved": " (cells saved for reuse)"}
        click.echo(f"{result.message}; dense map {s['cells']} cells from {s['windows']} windows of "
                   f"{s['window_px']} px{source.get(s.get('cells_from'), '')} in {s['seconds']:.1f} s on "
                   f"{s['provider']}"
                   + (f", {s['refined']} refined by SAM" if refine else "")
                   + f"; wrote {output}" + (f" and {raster}" if raster else ""), err=True)
