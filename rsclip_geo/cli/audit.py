"""``rsclip-geo audit``: which polygons of a land-cover layer (or segments of a class raster) disagree with a scene."""

from __future__ import annotations

import click

from ..tasks.audit import FLAG_BELOW, MAX_WINDOWS, audit, audit_class_raster, check_audit_output
from ..outputs.guard import model_files
from ..raster.tiling import TileSpec
from .options import FiniteFloatRange, ProgressBar, model_options, read_options, rotations_option


@click.command("audit")
@click.argument("inputs", nargs=-1, required=True, metavar="[LABELS] SCENE")
@click.option("--label-field", default=None, help="Field of LABELS holding each polygon's label.")
@click.option("--layer", default=None, help="Layer of LABELS to audit (files with several layers).")
@click.option("--class-raster", type=click.Path(dir_okay=False), default=None,
              help="Audit a class raster instead of LABELS: its connected segments are the units.")
@click.option("--class-names", type=click.Path(dir_okay=False), default=None,
              help="Class raster names: one a line (values 0, 1, ...) or 'VALUE: name' lines "
                   "(default: names stored in the raster).")
@click.option("--min-segment-px", type=click.IntRange(min=1), default=None,
              help="Class raster: merge segments smaller than this many pixels into their neighbours "
                   "(default: a quarter of one window's area; 1 = no sieve).")
@click.option("--label-map", type=click.Path(dir_okay=False), default=None,
              help='JSON mapping codes to words, e.g. {"21": "developed land"} (a list of prompts also works).')
@click.option("--flag-below", type=FiniteFloatRange(0, 1), default=FLAG_BELOW, show_default=True,
              help="Flag a feature when its best label is another one and its agreement is below this.")
@click.option("--max-windows", type=click.IntRange(min=1), default=MAX_WINDOWS, show_default=True,
              help="Windows per feature at most (taken evenly over the feature's tiles).")
@click.option("--tile-size", type=click.IntRange(min=1), default=None,
              help="Window size in pixels (default: the model's input size).")
@click.option("--tile-size-m", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Window size in metres on the ground.")
@click.option("--overlap", type=FiniteFloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Overlap of the window grid inside large features, as a fraction of the window.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output vector (.gpkg, .parquet, .geojson); default LABELS_audit.gpkg beside the labels.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@read_options
@model_options
@rotations_option
def audit_command(inputs, label_field, layer, class_raster, class_names, min_segment_px, label_map, flag_below,
                  max_windows, tile_size, tile_size_m, overlap, output, overwrite, quiet, model, scene_options,
                  max_invalid):
    """Score every feature of LABELS (or segment of --class-raster) against the imagery of SCENE.

    Adds agreement (probability of the feature's own label), best_label, best_score, flag and n_windows to
    every feature, in input order; the summary (overall and per-class agreement with 95 % intervals) is
    printed and stored in the output's metadata.
    """
    from pathlib import Path

    if class_raster:
        if len(inputs) != 1:
            raise click.UsageError("with --class-raster give only SCENE (the class raster replaces LABELS)")
        labels, scene = None, inputs[0]
    else:
        if len(inputs) != 2:
            raise click.UsageError("give LABELS and SCENE (or --class-raster CLASSES.tif and SCENE)")
        labels, scene = inputs
        if not label_field:
            raise click.UsageError("--label-field is required with a LABELS layer")
        if class_names or min_segment_px:
            raise click.UsageError("--class-names and --min-segment-px go with --class-raster")
    if tile_size is not None and tile_size_m is not None:
        raise click.UsageError("give --tile-size or --tile-size-m, not both")
    tile = TileSpec(size_px=tile_size, size_m=tile_size_m, overlap=overlap, edge="shift")
    source = Path(class_raster or labels)
    output = output or str(source.with_name(source.stem + "_audit.gpkg"))
    inputs_used = (labels, scene, class_raster, label_map, class_names, *model_files(model))
    check_audit_output(output, overwrite, inputs_used)  # fail before the work, not after
    bar = ProgressBar("audit", quiet)
    options = dict(model=model, tile=tile, label_map=label_map, flag_below=flag_below, max_windows=max_windows,
                   max_invalid=max_invalid, progress=bar, **scene_options)
    try:
        if class_raster:
            result = audit_class_raster(class_raster, scene, class_names=class_names,
                                        min_segment_px=min_segment_px, **options)
        else:
            result = audit(labels, scene, label_field, layer=layer, **options)
    finally:
        bar.close()
    result.write(output, overwrite=overwrite, inputs=inputs_used)
    if not quiet:
        click.echo(result.summary.describe(), err=True)
        click.echo(f"wrote {output}", err=True)
