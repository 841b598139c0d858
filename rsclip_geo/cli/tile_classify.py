"""``rsclip-geo tile-classify``: zero-shot labels for every tile of a scene."""

from __future__ import annotations

import click

from ..tasks.classify import tile_classify
from ..outputs.guard import check_outputs_apart, model_files, scene_caches
from ..runtime.prompts import parse_labels, read_labels_file
from ..outputs.writers import VECTOR_DRIVERS, check_class_count, check_output
from .options import FiniteFloatRange, ProgressBar, model_options, rotations_option, tiling_options


@click.command("tile-classify")
@click.argument("scene", type=click.Path(dir_okay=False))
@click.option("--labels", default=None, help="Comma-separated class names, e.g. 'water,forest,farmland'.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="One label a line; 'name: prompt one | prompt two' gives a label its own prompts.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output vector (.gpkg, .parquet, .geojson); default SCENE_labels.gpkg beside the scene.")
@click.option("--raster", type=click.Path(dir_okay=False), default=None,
              help="Also write a class raster (.tif) on the scene's grid (each pixel: its tile's class), with a "
                   "colour table.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--min-score", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="Tiles whose best probability is below this are labelled 'unknown'.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Quick-look PNG of the scene with the tiles tinted and labelled by class.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@tiling_options
@model_options
@rotations_option
def tile_classify_command(scene, labels, labels_file, output, raster, top_k, min_score, preview, overwrite, quiet,
                          model, tile, scene_options, max_invalid):
    """Label every tile of SCENE (a GeoTIFF or any GDAL raster) with the best-matching label."""
    from pathlib import Path

    if bool(labels) == bool(labels_file):
        raise click.UsageError("give exactly one of --labels or --labels-file")
    parsed = parse_labels(labels) if labels else read_labels_file(labels_file)
    output = output or str(Path(scene).with_name(Path(scene).stem + "_labels.gpkg"))
    check_outputs_apart({"-o/--output": output, "--raster": raster, "--preview": preview},
                        [scene, labels_file, *scene_caches([scene]), *model_files(model)])
    check_output(output, overwrite, suffixes=tuple(VECTOR_DRIVERS))  # fail before the work, not after
    if raster:
        check_output(raster, overwrite, suffixes=(".tif", ".tiff"))
        check_class_count(len(parsed) + (1 if min_score > 0 else 0), raster)
    if preview:
        check_output(preview, overwrite, suffixes=(".png",))
    bar = ProgressBar("tile-classify", quiet)
    try:
        result = tile_classify(scene, parsed, model=model, tile=tile, top_k=top_k, min_score=min_score,
                            max_invalid=max_invalid, progress=bar, **scene_options)
    finally:
        bar.close()
    image = None
    if preview:  # rendered before any output is written: a preview that fails leaves no outputs behind
        from ..outputs.preview import labels_image, save_preview

        image = labels_image(scene, result.frame, result.class_names, **scene_options)
    result.write(output, overwrite=overwrite)
    if raster:
        result.write_class_raster(raster, overwrite=overwrite)
    if preview:
        save_preview(image, preview, overwrite=overwrite)
    if not quiet:
        click.echo(result.summary.describe(), err=True)
        click.echo("labels: " + ", ".join(f"{k} {v}" for k, v in result.label_counts().items()), err=True)
        click.echo("wrote " + ", ".join(p for p in (output, raster, preview) if p), err=True)
