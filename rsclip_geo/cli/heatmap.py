"""``rsclip-geo heatmap``: semantic-localization (SeLo) heatmap of a text query over a scene, as a COG."""

from __future__ import annotations

import click

from ..tasks.heatmap import heatmap, selo_specs
from ..outputs.guard import check_outputs_apart, model_files, scene_caches
from ..outputs.writers import check_output
from .options import FiniteFloatRange, ProgressBar, model_options, parse_floats, read_options, rotations_option


@click.command("heatmap")
@click.argument("scene", type=click.Path(dir_okay=False))
@click.argument("query")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="Heatmap raster (.tif, COG).")
@click.option("--scales", "scales_px", callback=parse_floats, default=None, metavar="PX[,PX...]",
              help="Window sizes in pixels, e.g. 224,448 (default: the model input size and twice it, "
                   "where they fit half the scene).")
@click.option("--scales-m", callback=parse_floats, default=None, metavar="M[,M...]",
              help="Window sizes in metres, e.g. 100,200.")
@click.option("--overlap", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Window overlap (0.5 = SeLo's half-window offset in both axes).")
@click.option("--resolution-m", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Output cell size in metres (default: scene resolution, coarser for very large scenes).")
@click.option("--cell", type=FiniteFloatRange(min=1), default=None, metavar="PX",
              help="Output cell size in scene pixels.")
@click.option("--smooth", type=FiniteFloatRange(min=0), default=None, metavar="SIGMA",
              help="Gaussian sigma in output cells (default: a quarter of the smallest window stride; 0: none).")
@click.option("--raw", is_flag=True, help="Embed the query as written instead of through the prompt templates.")
@click.option("--preview", type=click.Path(dir_okay=False), default=None, help="Quick-look PNG with the heatmap.")
@click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
              help="Index file to reuse/save embeddings (default: the scene's sidecar index).")
@click.option("--no-index", is_flag=True, help="Neither read nor write an index; encode the windows in memory.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing outputs, and an --index file that is not this scene's and model's index.")
@click.option("-q", "--quiet", is_flag=True)
@read_options
@model_options
@rotations_option
def heatmap_command(scene, query, output, scales_px, scales_m, overlap, resolution_m, cell, smooth, raw, preview,
                    index_path, no_index, overwrite, quiet, model, scene_options, max_invalid):
    """Where in SCENE does QUERY match? Writes a [0, 1] heatmap on the scene's grid (NaN = no data)."""
    if not query.strip():
        raise click.BadParameter("empty query; give the text to localise, e.g. 'baseball field'",
                                 param_hint="QUERY")
    if scales_px and scales_m:
        raise click.UsageError("give --scales (pixels) or --scales-m (metres), not both")
    if resolution_m is not None and cell is not None:
        raise click.UsageError("give --resolution-m or --cell, not both")
    if no_index and index_path:
        raise click.UsageError("give --index or --no-index, not both")
    check_outputs_apart({"-o/--output": output, "--preview": preview, "--index": index_path},
                        [scene, *model_files(model)])
    check_outputs_apart({"-o/--output": output, "--preview": preview}, scene_caches([scene]))  # --index may be one
    check_output(output, overwrite, suffixes=(".tif", ".tiff"))
    if preview:
        check_output(preview, overwrite, suffixes=(".png",))
    try:
        specs = selo_specs(scales_px, scales_m, overlap)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bar = ProgressBar("windows", quiet)
    try:
        heat = heatmap(scene, query, scales=specs, model=model, resolution_m=resolution_m, cell=cell, sigma=smooth,
                       overlap=overlap, raw=raw, max_invalid=max_invalid, use_index=not no_index,
                       index_path=index_path, progress=bar, overwrite_index=overwrite, **scene_options)
    finally:
        bar.close()
    image = None
    if preview:  # rendered before any output is written: a preview that fails leaves no outputs behind
        from ..outputs.preview import heatmap_image, save_preview
        image = heatmap_image(scene, heat, **scene_options)
    heat.write(output, overwrite=overwrite)
    if preview:
        save_preview(image, preview, overwrite=overwrite)
    if not quiet:
        s = heat.stats
        rows, cols = heat.shape
        windows = ", ".join(f"{w}x{h}" for w, h in heat.window_px)
        click.echo(f"heatmap of {query!r}: {cols}x{rows} cells ({heat.cell[0]:.3g} px each), {s['windows_used']} "
                   f"windows at {windows} px ({s['windows_reused']} from the index, {s['windows_skipped']} skipped), "
                   f"smoothing sigma {heat.sigma:.3g} cells, {s['seconds']:.1f} s on {s['provider']}; wrote {output}"
                   + (f" and {preview}" if preview else ""), err=True)
