"""``rsclip-geo count``: RemoteCount-style object counts per tile, as polygons."""

from __future__ import annotations

import click

from ..tasks.count import count_objects
from ..runtime.count_prompts import MAX_COUNT, NUMERAL_STYLES
from ..outputs.guard import check_outputs_apart, model_files, scene_caches
from ..outputs.writers import VECTOR_DRIVERS, check_output
from .options import ProgressBar, model_options, rotations_option, tiling_options


@click.command("count")
@click.argument("scene", type=click.Path(dir_okay=False))
@click.argument("object_name", metavar="OBJECT")
@click.option("--max", "max_count", type=click.IntRange(1, MAX_COUNT), default=10, show_default=True,
              help="Largest count scored (prompts for 1..MAX objects).")
@click.option("--numerals", type=click.Choice(NUMERAL_STYLES), default="words", show_default=True,
              help="Numbers in the prompts as words ('three'), digits ('3') or both ensembled.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Per-tile counts (.gpkg, .parquet, .geojson).")
@click.option("--total", is_flag=True, help="Print the scene total (sum of the per-tile counts).")
@click.option("--preview", type=click.Path(dir_okay=False), default=None, help="Quick-look PNG with the counts.")
@click.option("--no-index", is_flag=True, help="Neither read nor write the scene's index.")
@click.option("--overwrite", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@tiling_options
@model_options
@rotations_option
def count_command(scene, object_name, max_count, numerals, output, total, preview, no_index, overwrite, quiet, model,
                  tile, scene_options, max_invalid):
    """Count OBJECT (such as 'small vehicle') in each tile of SCENE with RemoteCount prompts."""
    if not object_name.strip():
        raise click.BadParameter("empty object name; say what to count, e.g. 'small vehicle'", param_hint="OBJECT")
    check_outputs_apart({"-o/--output": output, "--preview": preview},
                        [scene, *scene_caches([scene]), *model_files(model)])
    check_output(output, overwrite, suffixes=tuple(VECTOR_DRIVERS))
    if preview:
        check_output(preview, overwrite, suffixes=(".png",))
    bar = ProgressBar("tiles", quiet)
    try:
        counts = count_objects(scene, object_name, max_count=max_count, model=model, tile=tile, numerals=numerals,
                               max_invalid=max_invalid, use_index=not no_index, progress=bar, **scene_options)
    finally:
        bar.close()
    image = None
    if preview:  # rendered before any output is written: a preview that fails leaves no outputs behind
        from ..outputs.preview import counts_image, save_preview
        image = counts_image(scene, counts, **scene_options)
    counts.write(output, overwrite=overwrite)
    if preview:
        save_preview(image, preview, overwrite=overwrite)
    if total:
        click.echo(f"total {object_name}: {counts.total} (sum over {len(counts)} tiles)")
    if not quiet:
        s = counts.summary
        click.echo(f"{s.scene}: {len(counts)} tiles counted for {object_name!r} (1..{max_count}), "
                   f"{s.skipped_text()}; tile {s.tile_width_px}x{s.tile_height_px} px; "
                   f"{s.seconds:.1f} s on {s.provider}; wrote {output}" + (f" and {preview}" if preview else ""),
                   err=True)
