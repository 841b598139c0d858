"""``rsclip-geo index``: encode every valid tile of a scene once, into a GeoParquet index."""

from __future__ import annotations

import click

from ..embeddings.index import build_index, sidecar_path, write_index
from ..outputs.guard import check_outputs_apart, model_files
from ..outputs.writers import check_output
from .options import ProgressBar, model_options, rotations_option, scales_options, tiling_options


@click.command("index")
@click.argument("scene", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Index file (.parquet); default: SCENE.rsclip-index.parquet beside the scene.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Embedding storage type.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index file.")
@click.option("-q", "--quiet", is_flag=True)
@tiling_options
@scales_options
@model_options
@rotations_option
def index_command(scene, output, dtype, overwrite, quiet, model, scales, tile, scene_options, max_invalid):
    """Build the embedding index of SCENE (reused by search, heatmap and count while it is fresh)."""
    output = output or str(sidecar_path(scene))
    check_outputs_apart({"-o/--output": output}, [scene, *model_files(model)])
    check_output(output, overwrite, suffixes=(".parquet", ".geoparquet"))
    bar = ProgressBar("index", quiet)
    try:
        index = build_index(scene, model, scales, max_invalid, progress=bar, **scene_options)
    finally:
        bar.close()
    write_index(index, output, overwrite=overwrite, dtype=dtype)
    if not quiet:
        click.echo(f"{len(index)} tiles at {len(scales)} scale(s) from {scene} on {model.provider}; wrote {output}",
                   err=True)
