"""``rsclip-geo models``: list, inspect, pull and export model bundles.

Only option parsing and printing; the work is in rsclip_geo.hub.catalog, .hub and
.export (imported lazily so the inference CLI never loads torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..runtime.bundle import ModelBundle, read_bundle
from ..errors import BundleError


@click.group("models")
def models() -> None:
    """Known checkpoints, pulled bundles and ONNX export of open_clip checkpoints."""


@models.command("list")
def list_command() -> None:
    """Known checkpoints with their source, architecture, activation, licence and local status."""
    from ..hub.catalog import bundle_dir, list_entries, status

    for entry in list_entries():
        state = status(entry)
        arch, act, lic = entry.architecture, entry.activation, entry.license
        if entry.kind == "shipped" and state == "shipped":
            try:
                b = read_bundle(bundle_dir(entry))
                arch, act, lic = b.architecture, b.activation, b.license
            except BundleError as exc:
                state = f"broken ({exc})"
        source = f"{entry.repo}/{entry.file}" if entry.kind == "hf" else "shipped with rsclip-geo"
        click.echo(f"{entry.name}  [{state}]")
        act_text = act or ("tower-defined" if arch else "-")
        click.echo(f"    {entry.title}; architecture {arch or '-'}; activation {act_text}")
        click.echo(f"    source: {source}")
        click.echo(f"    licence: {lic}")
        if state in ("pulled", "shipped"):
            click.echo(f"    bundle: {bundle_dir(entry)}")


def _size(path: Path) -> str:
    n = path.stat().st_size if path.is_file() else 0
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _fmt_num(v) -> str:
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def _print_bundle(b: ModelBundle) -> None:
    im, tx = b.image, b.text
    lines = [
        ("name", b.name), ("folder", str(b.root)), ("architecture", b.architecture),
        ("activation", b.activation or "tower-defined"),
        ("source", ", ".join(f"{k}={v}" for k, v in b.source.items() if k != "sha256") or "-"),
        ("licence", b.license), ("embed dim", str(b.embed_dim)),
        ("image", f"{im.size}x{im.size}, {im.interpolation}, mean {list(im.mean)}, std {list(im.std)}"),
        ("tokenizer", f"{tx.tokenizer} ({tx.tokenizer_file}), context {tx.context_length}, pad id {tx.pad_id}"),
        ("logit scale", f"{b.logit_scale:.4f}"),
        ("precision", f"image {b.precision_of('image')}, text {b.precision_of('text')}"),
        ("templates", f"{len(b.templates)} (e.g. {b.templates[0]!r})"),
    ]
    for key, value in lines:
        click.echo(f"{key:>13}: {value}")
    p = b.parity
    if p:
        figures = ", ".join(f"{k}={_fmt_num(p[k])}" for k in
                            ("image_cosine_min", "text_cosine_min", "n_images", "n_texts") if k in p)
        click.echo(f"{'parity':>13}: {figures}")
        if isinstance(p.get("inputs"), dict):
            click.echo(f"{'':>13}  inputs: {p['inputs'].get('images', '?')}; {p['inputs'].get('texts', '?')}")
        for kind in ("int8", "fp16"):
            if isinstance(p.get(kind), dict):
                q = p[kind]
                click.echo(f"{kind:>13}: " + ", ".join(f"{k}={_fmt_num(v)}" for k, v in q.items()
                                                         if k.endswith(("_min", "_mean", "_quantized", "_runs"))))
    click.echo(f"{'files':>13}:")
    for rel in dict.fromkeys(["model.json", b.image_encoder, b.text_encoder, b.text.tokenizer_file]):
        click.echo(f"{'':>15}{rel}  {_size(b.path(rel))}")


@models.command("info")
@click.argument("path_or_name")
@click.option("--json", "as_json", is_flag=True, help="Print model.json as JSON instead.")
def info_command(path_or_name: str, as_json: bool) -> None:
    """Describe a bundle folder, a pulled model or a catalog entry."""
    from ..hub.catalog import ENTRIES, bundle_dir, get_entry

    path = Path(path_or_name).expanduser()
    if path.is_dir():
        bundle = read_bundle(path)
    else:
        entry = get_entry(path_or_name) if path_or_name in {e.name for e in ENTRIES} else None
        if entry is None:
            raise BundleError(f"{path_or_name}: neither a bundle folder nor a known model name "
                              "(see `rsclip-geo models list`)")
        folder = bundle_dir(entry)
        if not (folder / "model.json").is_file():
            click.echo(f"{entry.name}: {entry.title} -- not available locally "
                       f"({'not built' if entry.kind == 'shipped' else 'run: rsclip-geo models pull ' + entry.name})")
            click.echo(f"  architecture {entry.architecture or '-'}, activation {entry.activation or '-'}")
            if entry.kind == "hf":
                click.echo(f"  source: {entry.url()}")
            click.echo(f"  licence: {entry.license}")
            return
        bundle = read_bundle(folder)
    if as_json:
        click.echo(json.dumps(bundle.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_bundle(bundle)


@models.command("pull")
@click.argument("name")
@click.option("--int8", is_flag=True, help="Also quantise to int8 (see `models export --help`).")
@click.option("--overwrite", is_flag=True, help="Download/export again even if already pulled.")
def pull_command(name: str, int8: bool, overwrite: bool) -> None:
    """Download a known checkpoint (Hugging Face Hub) and export it into the user cache."""
    from ..hub.pull import pull

    folder = pull(name, int8=int8, overwrite=overwrite)
    click.echo(str(folder))


@models.command("export")
@click.option("--arch", required=True, metavar="ARCH",
              help="open_clip model name (ViT-B-32, RN50-quickgelu, ...) or an open_clip model-config .json file.")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Checkpoint: state dict, open_clip training checkpoint, .safetensors or OpenAI JIT archive.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle folder to create.")
@click.option("--int8", is_flag=True,
              help="Dynamic int8 MatMul/Gemm weights for the text encoder and transformer image encoders "
                   "(convolutional image encoders stay fp32); int8-vs-fp32 cosine goes into model.json.")
@click.option("--fp16", is_flag=True,
              help="float16 encoders for CUDA (float32 inputs/outputs; onnxconverter-common), instead of fp32; "
                   "fp16-vs-fp32 cosine (measured with onnxruntime CPU) goes into model.json. Excludes --int8.")
@click.option("--activation", type=click.Choice(["quick_gelu", "gelu"]), default=None,
              help="Required for open_clip's own towers unless ARCH ends in -quickgelu: quick_gelu for "
                   "OpenAI-derived weights (OpenAI, RemoteCLIP, GeoRSCLIP), gelu for LAION/DataComp-style.")
@click.option("--name", default=None, help="Model name recorded in model.json (default: checkpoint file stem).")
@click.option("--license", "license_", default="unknown", show_default=True, help="Licence recorded in model.json.")
@click.option("--parity-image", "parity_images", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Image(s) for the torch/ONNX parity check (default: packaged parity images).")
@click.option("--dense", is_flag=True,
              help="Also write a dense head (dense_encoder.onnx: per-cell embeddings from one pass over a large "
                   "window, for `segment`): conv towers apply the projection to every cell of the last feature "
                   "map, open_clip ViTs use MaskCLIP-style patch tokens. Computes in fp32.")
@click.option("--dense-window", "dense_window_cells", type=click.IntRange(min=1), default=None, metavar="CELLS",
              help="Default dense window in cells per side [the model's input size: 4 cells of 32 px for a 128 px "
                   "model; larger windows measured worse for the shipped model, see README].")
@click.option("--dense-weights", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="How the dense head stores its weights: fp16 = float16 initializers cast to float32 when the "
                   "model loads (half the file, same fp32 kernels and speed; parity vs torch recorded), fp32 = plain.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def export_command(arch: str, checkpoint: Path, out_dir: Path, int8: bool, fp16: bool, activation: str | None,
                   name: str | None, license_: str, parity_images: tuple[str, ...], dense: bool,
                   dense_window_cells: int | None, dense_weights: str, overwrite: bool) -> None:
    """Export an open_clip checkpoint to a self-describing ONNX bundle (needs the export extra)."""
    from ..export import export_checkpoint

    if int8 and fp16:
        raise click.UsageError("--int8 and --fp16 exclude each other (int8 is for CPU, fp16 for CUDA)")
    bundle = export_checkpoint(arch, checkpoint, out_dir, activation=activation, name=name, int8=int8, fp16=fp16,
                               overwrite=overwrite, license=license_, parity_images=list(parity_images) or None,
                               dense=dense, dense_window_cells=dense_window_cells,
                               dense_weights=dense_weights)
    p = bundle.parity
    q = p.get("fp16", {})
    click.echo(f"wrote {out_dir}: {bundle.architecture}, embed dim {bundle.embed_dim}, "
               f"parity image cos min {p['image_cosine_min']:.6f}, text cos min {p['text_cosine_min']:.6f}"
               + (f", int8 text cos min {p['int8']['text_cosine_min']:.4f}" if "int8" in p else "")
               + (f", fp16 (onnxruntime CPU) image cos min {q['image_cosine_min']:.6f}, text cos min "
                  f"{q['text_cosine_min']:.6f}" if "image_cosine_min" in q else "")
               + (", fp16 not compared (onnxruntime CPU cannot run it)" if q.get("cpu_runs") is False else "")
               + (f", dense {bundle.dense.method} stride {bundle.dense.stride} window {bundle.dense.window} "
                  f"cos min {bundle.dense.parity['cosine_min']:.6f}, weights {bundle.dense.weights}"
                  if bundle.dense else ""))
