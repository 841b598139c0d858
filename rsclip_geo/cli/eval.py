"""``rsclip-geo eval``: measure a model bundle on labelled data (zero-shot, retrieval, probes, counting)."""

from __future__ import annotations

import functools

import click

from ..runtime.count_prompts import MAX_COUNT
from .options import FiniteFloatRange, model_options, rotations_option


def _output_options(f):
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of tables.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper


class _ImageBar:
    """tqdm on stderr for (done, total) image callbacks; a new pass (e.g. the train folder) starts a new bar."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None or self.bar.total != total or done < self.bar.n:
            self.close()
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit="img", dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run(desc: str, quiet: bool, fn, *args, **kwargs):
    bar = _ImageBar(desc, quiet)
    try:
        return fn(*args, progress=bar, **kwargs)
    finally:
        bar.close()


def _emit(result, as_json: bool, formatter) -> None:
    from ..evaluation.report import to_json

    click.echo(to_json(result) if as_json else formatter(result))


def _int_list(ctx, param, value):
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,4,16, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter("give one or more positive integers")
    return out


@click.group("eval")
def eval_group() -> None:
    """Evaluate a model bundle on your own labelled images (same runtime and preprocessing as tiles)."""


@eval_group.command("zero-shot")
@click.argument("folder", metavar="DIR", type=click.Path())
@click.option("--classnames", type=click.Path(dir_okay=False), default=None,
              help="JSON object mapping folder names to the class names used in prompts "
                   "(default: folder names split into words, e.g. DenseResidential -> 'dense residential'; "
                   "a sort number that every folder starts with is dropped: 01_water -> 'water').")
@click.option("--templates-file", type=click.Path(dir_okay=False), default=None,
              help="Prompt templates, one a line with '{}' for the class name (default: the model's).")
@click.option("--limit-per-class", type=click.IntRange(min=1), default=None,
              help="Evaluate a random sample of at most N images per class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --limit-per-class.")
@_output_options
@model_options
@rotations_option
def zero_shot_command(folder, classnames, templates_file, limit_per_class, seed, as_json, quiet, model):
    """Zero-shot top-1/top-5 accuracy on DIR, which holds one folder of images (jpg, png, tif) per class."""
    from ..evaluation.datasets import ImageFolderDataset
    from ..evaluation.report import format_zero_shot
    from ..evaluation.zero_shot import evaluate_zero_shot
    from ..runtime.prompts import read_templates_file

    dataset = ImageFolderDataset.from_folder(folder, limit_per_class=limit_per_class, seed=seed)
    templates = read_templates_file(templates_file) if templates_file else None
    result = _run("zero-shot", quiet, evaluate_zero_shot, model, dataset, classnames=classnames, templates=templates)
    _emit(result, as_json, format_zero_shot)


@eval_group.command("retrieval")
@click.argument("captions", metavar="CAPTIONS.json|csv", type=click.Path(dir_okay=False))
@click.option("--images-root", type=click.Path(file_okay=False), default=None,
              help="Folder the image paths are relative to (default: the caption file's folder).")
@click.option("--split", default="test", show_default=True,
              help="Karpathy JSON split to evaluate ('all' for every image); ignored for CSV.")
@_output_options
@model_options
@rotations_option
def retrieval_command(captions, images_root, split, as_json, quiet, model):
    """Image->text and text->image recall@1/5/10 and mean recall (RemoteCLIP's protocol)."""
    from ..evaluation.datasets import read_captions
    from ..evaluation.report import format_retrieval
    from ..evaluation.retrieval import evaluate_retrieval

    data = read_captions(captions, images_root=images_root, split=split)
    result = _run("retrieval", quiet, evaluate_retrieval, model, data)
    _emit(result, as_json, format_retrieval)


@eval_group.command("probe")
@click.argument("folder", metavar="DIR", type=click.Path())
@click.option("--train-dir", type=click.Path(), default=None,
              help="Train on this folder-per-class set and test on DIR (same class folders).")
@click.option("--split", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Without --train-dir: fraction of each class of DIR used for training [default: 0.8].")
@click.option("--shots", callback=_int_list, default="1,4,16", show_default=True,
              help="Few-shot sizes (images per class).")
@click.option("--k", "k", type=click.IntRange(min=1), default=20, show_default=True, help="Neighbours for k-NN.")
@click.option("--draws", type=click.IntRange(min=1), default=5, show_default=True,
              help="Random draws averaged per few-shot size.")
@click.option("--limit-per-class", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@_output_options
@model_options
@rotations_option
def probe_command(folder, train_dir, split, shots, k, draws, limit_per_class, seed, as_json, quiet, model):
    """Linear probe, k-NN and few-shot accuracy on frozen image embeddings."""
    from ..evaluation.probe import evaluate_probe
    from ..evaluation.report import format_probe

    if train_dir and split is not None:
        raise click.UsageError("give --train-dir or --split, not both")
    result = _run("probe", quiet, evaluate_probe, model, folder, train_dataset=train_dir,
                  split=0.8 if split is None else split, shots=shots, k=k, draws=draws, seed=seed,
                  limit_per_class=limit_per_class)
    _emit(result, as_json, format_probe)


@eval_group.command("count")
@click.argument("source", metavar="DIR_OR_LIST", type=click.Path())
@click.option("--max", "max_count", type=click.IntRange(2, MAX_COUNT), default=10, show_default=True,
              help="Largest count prompted (counts 1..MAX).")
@click.option("--numerals", default="words", show_default=True,
              help="How numbers are written in prompts: words ('three'), digits ('3'), both (ensembled), "
                   "or a comma-separated list of your own for 1..MAX.")
@click.option("--template", default="a satellite photo of {n} {objects}", show_default=True,
              help="Prompt with {n} for the number and {objects} for the object name (plural from 2).")
@_output_options
@model_options
@rotations_option
def count_command(source, max_count, numerals, template, as_json, quiet, model):
    """Counting accuracy on a CSV image_path,object_name,count (or a folder holding counts.csv)."""
    from ..evaluation.counting import evaluate_counting
    from ..runtime.count_prompts import NUMERAL_STYLES
    from ..evaluation.report import format_counting

    spelled = numerals if numerals in NUMERAL_STYLES else [s.strip() for s in numerals.split(",")]
    result = _run("count", quiet, evaluate_counting, model, source, max_count=max_count, numerals=spelled,
                  template=template)
    _emit(result, as_json, format_counting)
