"""``rsclip-geo batch index|classify``: a whole collection of scenes as one resumable job (optionally on Dask)."""

from __future__ import annotations

import functools
import json
import logging

import click

from ..runtime.encoder import DEVICES, MAX_BATCH_SIZE, MAX_THREADS
from .options import FiniteFloatRange, rotations_option, scales_options, tiling_options


def job_options(f):
    """Collection, model (loaded by each worker, not here) and where to run."""
    @click.option("--asset", default=None, metavar="KEY",
                  help="STAC asset key to use, e.g. visual (default: each item's first GeoTIFF asset).")
    @click.option("--recursive", is_flag=True, help="For a folder: also take rasters in its subfolders.")
    @click.option("--strict", is_flag=True,
                  help="Stop before any work if an entry is missing or has no usable asset (default: report it "
                       "as failed and go on).")
    @click.option("--model", "model_name", default=None, metavar="NAME_OR_PATH",
                  help="Model bundle folder or pulled model name (default: the shipped model); every worker must "
                       "be able to read it.")
    @click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
    @click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None,
                  help="onnxruntime threads per worker (default: cores / workers on each machine).")
    @click.option("--batch-size", type=click.IntRange(1, MAX_BATCH_SIZE), default=32, show_default=True)
    @rotations_option
    @click.option("--workers", type=click.IntRange(min=1), default=None,
                  help="Run on a local Dask cluster of N worker processes (needs rsclip-geo[cluster]).")
    @click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                  help="Run on an existing Dask cluster; scenes, model and OUT_DIR must be on a shared file system.")
    @click.option("--rebuild", is_flag=True, help="Re-run every scene, even those already finished.")
    @click.option("--overwrite", is_flag=True, help="Also replace files in OUT_DIR that are not partitions.")
    @click.option("--report", type=click.Path(dir_okay=False), default=None,
                  help="Write the summary (every scene's status and error) as JSON.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar; only failures and the summary line.")
    @functools.wraps(f)
    def wrapper(*args, model_name, workers, scheduler, quiet, report, **kwargs):
        if workers is not None and scheduler is not None:
            raise click.UsageError("give --workers or --scheduler, not both")
        kwargs.update(model=model_name, workers=workers, scheduler=scheduler)
        if workers is not None or scheduler is not None:
            _quiet_dask()
        bar = _Bar(quiet)
        try:
            summary = f(*args, progress=bar, **kwargs)
        finally:
            bar.close()
        click.echo(summary.describe(), err=True)
        if report:
            from ..outputs.writers import atomic_path

            with atomic_path(report, overwrite=True) as tmp:
                tmp.write_text(json.dumps(summary.to_dict(), indent=2), encoding="utf-8")
        if not summary.ok:
            raise SystemExit(1)
    return wrapper


def _quiet_dask() -> None:
    """distributed sets its loggers to INFO when imported; without -v only its warnings belong on stderr."""
    from ..batch.dask_client import import_distributed

    import_distributed()
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("distributed").setLevel(logging.WARNING)


class _Bar:
    """A tqdm bar over scenes on stderr."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, result, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="scenes", unit="scene", dynamic_ncols=True)
        self.bar.set_postfix_str(f"{result.name}: {result.status}", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.group("batch")
def batch_group() -> None:
    """Index or classify a collection of scenes (folder, list file or STAC JSON) into one dataset.

    Resumable: scenes whose output matches the scene file, model and parameters are skipped;
    failures are listed at the end and make the exit code 1.
    """


@batch_group.command("index")
@click.argument("collection", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@tiling_options
@scales_options
@job_options
def batch_index_command(collection, out_dir, dtype, scales, tile, scene_options, max_invalid, **job):
    """Embedding indexes of every scene of COLLECTION in OUT_DIR (search it with `rsclip-geo search OUT_DIR`)."""
    from ..batch.jobs import batch_index

    return batch_index(collection, out_dir, scales=scales, max_invalid=max_invalid, dtype=dtype, **job,
                       **scene_options)


@batch_group.command("classify")
@click.argument("collection", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--labels", default=None, help="Comma-separated class names, e.g. 'water,forest,farmland'.")
@click.option("--labels-file", type=click.Path(dir_okay=False), default=None,
              help="One label a line; 'name: prompt one | prompt two' gives a label its own prompts.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--min-score", type=FiniteFloatRange(0, 1), default=0.0, show_default=True,
              help="Tiles whose best probability is below this are labelled 'unknown'.")
@tiling_options
@job_options
def batch_classify_command(collection, out_dir, labels, labels_file, top_k, min_score, tile, scene_options,
                           max_invalid, **job):
    """Zero-shot labels for every tile of every scene of COLLECTION, one GeoParquet partition per scene in OUT_DIR."""
    from ..batch.jobs import batch_classify
    from ..runtime.prompts import parse_labels, read_labels_file

    if bool(labels) == bool(labels_file):
        raise click.UsageError("give exactly one of --labels or --labels-file")
    parsed = parse_labels(labels) if labels else read_labels_file(labels_file)
    return batch_classify(collection, out_dir, parsed, tile=tile, top_k=top_k, min_score=min_score,
                          max_invalid=max_invalid, **job, **scene_options)
