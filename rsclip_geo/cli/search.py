"""``rsclip-geo search``: the tiles that best match a text query, as ranked polygons."""

from __future__ import annotations

import click

from ..outputs.guard import check_outputs_apart, model_files, scene_caches
from ..tasks.search import search
from ..outputs.writers import VECTOR_DRIVERS, check_output
from .options import FiniteFloatRange, ProgressBar, model_options, rotations_option, scales_options, tiling_options


@click.command("search")
@click.argument("source", nargs=-1, required=True, type=click.Path())
@click.argument("query")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--negative", multiple=True, help="Text to steer away from (repeatable), e.g. --negative clouds.")
@click.option("--negative-weight", type=FiniteFloatRange(min=0), default=0.5, show_default=True)
@click.option("--raw", is_flag=True, help="Embed the query as written instead of through the prompt templates.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Hits (.gpkg, .parquet, .geojson).")
@click.option("--heatmap", type=click.Path(dir_okay=False), default=None,
              help="Per-tile score raster (.tif, COG) for a single scene at a single scale.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None,
              help="Quick-look PNG of the best hit's scene with its hits outlined and ranked.")
@click.option("--rebuild", is_flag=True, help="Rebuild the scene index even if it is fresh.")
@click.option("--overwrite", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
@tiling_options
@scales_options
@model_options
@rotations_option
def search_command(source, query, top, negative, negative_weight, raw, output, heatmap, preview, rebuild, overwrite,
                   quiet, model, scales, tile, scene_options, max_invalid):
    """Search SOURCE (scenes, index files or folders) for QUERY."""
    if not query.strip():  # said before any scene is indexed
        raise click.BadParameter("empty query; give the text to find, e.g. 'storage tanks'", param_hint="QUERY")
    if any(not n.strip() for n in negative):
        raise click.BadParameter(f"empty negative prompt in {list(negative)!r}", param_hint="'--negative'")
    check_outputs_apart({"-o/--output": output, "--heatmap": heatmap, "--preview": preview},
                        [*source, *scene_caches(source), *model_files(model)])
    check_output(output, overwrite, suffixes=tuple(VECTOR_DRIVERS))
    if heatmap:
        check_output(heatmap, overwrite, suffixes=(".tif", ".tiff"))
    if preview:
        check_output(preview, overwrite, suffixes=(".png",))
    bar = ProgressBar("index", quiet)
    try:
        hits = search(list(source), query, top=top, negative=list(negative), model=model, scales=scales,
                      negative_weight=negative_weight, raw=raw, max_invalid=max_invalid, rebuild=rebuild,
                      progress=bar, **scene_options)
    finally:
        bar.close()
    if heatmap and (len(hits.indexes) != 1 or len(hits.indexes[0].plans) != 1):
        raise click.UsageError("--heatmap needs a single scene indexed at a single scale")
    image = None
    if preview and len(hits):  # rendered before any output is written: a preview that fails leaves no outputs
        from ..outputs.preview import hits_image, save_preview
        best = hits.frame["scene"].iloc[0]
        image = hits_image(best, hits.frame[hits.frame["scene"] == best], hits.query, **scene_options)
    if heatmap:
        hits.write_scores(heatmap, overwrite=overwrite)
    hits.write(output, overwrite=overwrite)
    if image is not None:
        save_preview(image, preview, overwrite=overwrite)
    if not quiet:
        click.echo(f"{len(hits)} hits for {query!r} among {hits.n_tiles} tiles; best score "
                   f"{hits.frame['score'].iloc[0]:.3f} in {hits.frame['scene'].iloc[0]}; wrote {output}", err=True)
