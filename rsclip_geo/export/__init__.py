"""Export of open_clip checkpoints to rsclip-geo model bundles (needs the export extra: torch, open_clip).

``export_checkpoint`` builds the architecture, loads the checkpoint strictly,
writes both encoders to ONNX plus the tokenizer files, checks torch/onnxruntime
parity on real inputs, optionally replaces them by int8 (CPU) or float16 (CUDA)
encoders, and writes ``model.json
last into a temporary folder that is then renamed into place: a half-written
bundle is never a valid one. Nothing here imports torch at module import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..runtime.bundle import IMAGE_ENCODER, TEXT_ENCODER, ModelBundle, read_bundle
from ..errors import BundleError, OutputError
from .checkpoint import load_checkpoint_state, load_strict
from .weight_storage import FP16_STORED_MIN_COSINE

__all__ = ["export_checkpoint", "load_checkpoint_state"]

log = logging.getLogger(__name__)

IMAGE_ENCODER_INT8 = "image_encoder.int8.onnx"
TEXT_ENCODER_INT8 = "text_encoder.int8.onnx"
IMAGE_ENCODER_FP16 = "image_encoder.fp16.onnx"
TEXT_ENCODER_FP16 = "text_encoder.fp16.onnx"
# fp16 vs fp32 ONNX on the parity inputs, where onnxruntime's CPU provider runs the fp16 graphs: below this the
# conversion is broken (overflow, NaN), not merely rounded. One bar with float16-stored weights (weight_storage).
FP16_MIN_COSINE = FP16_STORED_MIN_COSINE
EXAMPLE_SHORT_TEXT = "a river"  # traced next to a longer text, so the example has padding


def partial_bundle_dir(out_dir: Path) -> Path:
    """A hidden temporary folder beside ``out_dir`` where a bundle is written before it is renamed into place,
    with ordinary folder permissions (mkdtemp makes it 0700)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


@contextmanager
def written_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to write into: renamed to ``out_dir`` when the block ends cleanly
    (replacing an existing one only with ``overwrite``), removed when it raises. A folder is never half-written."""
    tmp = partial_bundle_dir(out_dir)
    try:
        yield tmp
        _move_into_place(tmp, Path(out_dir), overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("rsclip-geo", "torch", "open_clip_torch", "onnx", "onnxruntime", "timm", "transformers",
                 "onnxconverter-common"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise OutputError(f"{out_dir}: already exists; pass --overwrite (overwrite=True) to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")


def _check_replaceable(out_dir: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """--overwrite replaces an old bundle, nothing else: not a folder without model.json (a home folder, a
    checkpoints folder), not one that holds a file the export reads (`--checkpoint ckpts/x.pt -o ckpts`)."""
    if not out_dir.exists():
        return
    real = out_dir.resolve()
    for item in inputs:
        path = Path(item).expanduser()
        if path.exists() and (path.resolve() == real or real in path.resolve().parents):
            raise OutputError(f"{out_dir}: holds the input {item}; an export never replaces the folder it reads "
                              "from: choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "model.json").is_file():
        raise OutputError(f"{out_dir}: exists and is not a model bundle (no model.json); --overwrite only replaces "
                          "a bundle folder or an empty one: choose a new folder")


def _move_into_place(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temp folder to ``out_dir`` (replacing an old bundle only with ``overwrite``)."""
    _check_target(out_dir, overwrite)
    if out_dir.exists():
        trash = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, trash)
        os.replace(tmp, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    if templates is None:
        from ..runtime.prompts import DEFAULT_TEMPLATES

        templates = DEFAULT_TEMPLATES
    templates = tuple(templates)
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise BundleError(f"templates must be a non-empty list of strings containing '{{}}', got {templates!r}")
    return templates


def _portable(value):
    """The card without this machine's absolute paths (e.g. a local HF text-tower folder): 'local:<last parts>'."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str):
        prefix, _, rest = value.rpartition(":") if value.startswith(("hf:", "timm:")) else ("", "", value)
        if os.path.isabs(rest):
            parts = Path(rest).parts
            return (prefix + ":" if prefix else "") + "local:" + "/".join(parts[-2:])
    return value


def _add_int8(folder: Path, quant_image: bool, images: np.ndarray, ids: np.ndarray,
              fp32_out: dict) -> tuple[str, str, dict]:
    """Quantise in ``folder`` (text always, image only for transformers), drop the replaced fp32 files,
    and return (image file, text file, int8-vs-fp32 figures)."""
    from . import parity as par
    from .onnx_export import INT8_OP_TYPES, INT8_TEXT_OP_TYPES, quantize_int8

    quantize_int8(folder / TEXT_ENCODER, folder / TEXT_ENCODER_INT8, INT8_TEXT_OP_TYPES)
    if quant_image:
        quantize_int8(folder / IMAGE_ENCODER, folder / IMAGE_ENCODER_INT8)
    figures = par.int8_figures(folder / IMAGE_ENCODER_INT8 if quant_image else None, folder / TEXT_ENCODER_INT8,
                               images, ids, fp32_out)
    figures.update({
        "ops": list(INT8_OP_TYPES), "text_ops": list(INT8_TEXT_OP_TYPES), "text_quantized": True,
        "image_quantized": quant_image,
        "note": ("dynamic int8 weights: MatMul/Gemm/Gather (token embeddings) of the text encoder, "
                 + ("MatMul/Gemm of the image encoder" if quant_image else
                    "image encoder kept fp32 (convolutional tower: int8 convolutions are slow on CPU)")),
        "compared_to": "fp32 ONNX on the parity inputs",
    })
    (folder / TEXT_ENCODER).unlink()
    if quant_image:
        (folder / IMAGE_ENCODER).unlink()
    return (IMAGE_ENCODER_INT8 if quant_image else IMAGE_ENCODER), TEXT_ENCODER_INT8, figures


def _add_fp16(folder: Path, images: np.ndarray, ids: np.ndarray, fp32_out: dict) -> dict:
    """float16 copies of both encoders in ``folder`` (fp32 files dropped); returns fp16-vs-fp32 figures, measured
    on onnxruntime's CPU provider when it runs the graphs (CUDA is the target and is not measured here)."""
    from importlib import metadata

    from ..runtime.encoder import FP16_DISABLED_OPTIMIZERS
    from . import parity as par
    from .onnx_export import convert_fp16

    convert_fp16(folder / IMAGE_ENCODER, folder / IMAGE_ENCODER_FP16)
    convert_fp16(folder / TEXT_ENCODER, folder / TEXT_ENCODER_FP16)
    figures: dict[str, Any] = {
        "converter": f"onnxconverter-common {metadata.version('onnxconverter-common')} float16, keep_io_types "
                     "(float32 input and output), the graph's Cast-to-float32 nodes kept float32",
        "min_cosine_required": FP16_MIN_COSINE,
    }
    try:
        figures.update(par.int8_figures(folder / IMAGE_ENCODER_FP16, folder / TEXT_ENCODER_FP16, images, ids,
                                        fp32_out, disabled_optimizers=FP16_DISABLED_OPTIMIZERS))
    except Exception as exc:  # onnxruntime's own types: the CPU provider cannot run the fp16 graphs
        figures.update(cpu_runs=False, note=f"not compared: onnxruntime CPU cannot run the fp16 graphs ({exc}); "
                                            "not measured on CUDA either")
    else:
        figures.update(cpu_runs=True, compared_to="fp32 ONNX on the parity inputs",
                       note="measured on onnxruntime CPUExecutionProvider (it computes in float32 where it has no "
                            "float16 CPU kernel; optimisers " + ", ".join(FP16_DISABLED_OPTIMIZERS) + " off as in "
                            "the runtime); the target, CUDA, was not measured at export")
        low = [f"{k} = {figures[k]:.6f}" for k in ("image_cosine_min", "text_cosine_min")
               if not figures[k] >= FP16_MIN_COSINE]  # NaN fails too
        if low:
            raise BundleError("float16 encoders do not reproduce the fp32 ONNX (onnxruntime CPU): " + ", ".join(low)
                              + f" (required >= {FP16_MIN_COSINE}); the bundle was not written")
    (folder / IMAGE_ENCODER).unlink()
    (folder / TEXT_ENCODER).unlink()
    return figures


def export_checkpoint(
    arch: str,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    activation: str | None = None,
    name: str | None = None,
    int8: bool = False,
    fp16: bool = False,
    overwrite: bool = False,
    source: dict[str, Any] | None = None,
    license: str = "unknown",
    templates: Sequence[str] | None = None,
    card: dict[str, Any] | None = None,
    parity_images: Sequence[str | os.PathLike] | None = None,
    preprocess: dict[str, Any] | None = None,
    min_cosine: float | None = None,
    opset: int | None = None,
    dense: bool = False,
    dense_window_cells: int | None = None,
    dense_weights: str = "fp16",
) -> ModelBundle:
    """Export an open_clip checkpoint to a bundle folder ``out_dir``; return the written bundle.

    ``arch``: an open_clip model name (``ViT-B-32``, ``RN50-quickgelu``...) or an open_clip model-config
    JSON file (registered under its file stem). ``activation``: ``quick_gelu``/``gelu``, required where
    open_clip's own towers make the choice matter. ``int8``: dynamic int8 MatMul/Gemm weights for the text
    encoder and, for transformer image towers only, the image encoder (fp32 files are not kept). ``fp16``: float16
    encoders with float32 inputs/outputs instead, for CUDA (fp32 files are not kept; excludes ``int8``).
    ``preprocess``: mean/std/interpolation to record instead of the architecture's (a checkpoint file
    carries none; by default they come from a config file, else open_clip's pretrained tags, else defaults).
    ``parity_images``: image files for the parity check (default: packaged parity PNGs, else synthetic).
    ``dense``: also write the dense head (``dense_encoder.onnx``, see ``export.dense``; fp32 compute), whose
    default window is ``dense_window_cells`` cells per side (default: the model's input size, e.g. 4 cells) and
    whose weights are stored as ``dense_weights`` ("fp16": float16 initializers cast to float32 when onnxruntime
    loads it, half the file, see ``export.weight_storage``; "fp32").
    Raises BundleError (bad checkpoint/arch/parity), OutputError (exists), MissingDependencyError.
    """
    from ._deps import require_torch

    require_torch()
    from ..runtime.tokenizers import load_tokenizer
    from ..runtime.preprocess import Preprocessor
    from . import parity as par
    from .arch import build_model
    from .onnx_export import DEFAULT_OPSET, export_encoders
    from .tokenizer_files import write_tokenizer_files

    if int8 and fp16:
        raise BundleError("int8 and fp16 exclude each other: int8 weights are for CPU, fp16 for CUDA")
    if fp16:
        from .onnx_export import require_fp16_converter

        require_fp16_converter()
    dense_min_cosine = None if min_cosine is None else float(min_cosine)  # None: the bar of its weight storage
    min_cosine = par.DEFAULT_MIN_COSINE if min_cosine is None else float(min_cosine)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < 17:
        raise BundleError(f"opset {opset} is too old; rsclip-geo bundles use ONNX opset >= 17")
    out_dir = Path(out_dir).expanduser()
    checkpoint = Path(checkpoint).expanduser()
    _check_target(out_dir, overwrite)
    _check_replaceable(out_dir, [checkpoint, arch, *(parity_images or ())])
    templates = _templates(templates)

    state = load_checkpoint_state(checkpoint)
    built = build_model(arch, activation, preprocess)
    load_strict(built.model, state, built.arch, checkpoint)
    del state
    model = built.model
    log.info("loaded %s into %s (activation %s)", checkpoint, built.arch, built.activation or "tower-defined")

    with written_folder(out_dir, overwrite) as tmp:
        text_spec = write_tokenizer_files(built.tokenizer, tmp)
        model_pad = getattr(getattr(getattr(model, "text", None), "config", None), "pad_token_id", None)
        if built.text_tower.startswith("hf:") and model_pad is not None and int(model_pad) != text_spec.pad_id:
            raise BundleError(f"text tower pads with id {model_pad} but its tokenizer pads with {text_spec.pad_id}; "
                              "the in-graph attention mask would be wrong")
        tokenizer = load_tokenizer(text_spec, tmp / text_spec.tokenizer_file)

        raw_images, image_info = par.parity_images(parity_images)
        images = Preprocessor(built.image)(raw_images)
        texts, text_info = par.parity_texts(templates)
        ids = tokenizer(texts)
        reference_ids = np.asarray(built.tokenizer(texts), dtype=np.int64)
        if not np.array_equal(ids, reference_ids):
            raise BundleError(f"{tmp / text_spec.tokenizer_file}: bundle tokenizer ids differ from open_clip's "
                              "on the parity texts")
        example_ids = tokenizer([texts[0], EXAMPLE_SHORT_TEXT])  # padded rows: the mask path is traced
        export_encoders(model, images[:2], example_ids, tmp, IMAGE_ENCODER, TEXT_ENCODER, opset,
                        pad_id=text_spec.pad_id)  # open_clip's own causal text tower: dynamic length where exact
        # graphs over 2 GB cannot hold their weights inline; ONNX then keeps them in side files
        external = sorted(set(os.listdir(tmp)) - {IMAGE_ENCODER, TEXT_ENCODER, text_spec.tokenizer_file})
        if external and (int8 or fp16):
            raise BundleError(f"{arch}: encoders over 2 GB (external data {external[:3]}...) cannot be "
                              f"converted by this exporter; export without --{'int8' if int8 else 'fp16'}")

        figures, onnx_out = par.check_parity(model, tmp / IMAGE_ENCODER, tmp / TEXT_ENCODER, images, ids,
                                             text_spec.pad_id, min_cosine)
        trimmed = figures.get("text_trimmed_cosine_min")
        text_spec = replace(text_spec, dynamic_length=trimmed is not None and trimmed >= min_cosine)
        parity: dict[str, Any] = {**figures, "inputs": {**image_info, **text_info},
                                  "runtime": "onnxruntime CPUExecutionProvider"}
        embed_dim = int(onnx_out["image"].shape[1])
        if onnx_out["text"].shape[1] != embed_dim:
            raise BundleError(f"image embedding dim {embed_dim} != text embedding dim {onnx_out['text'].shape[1]}")

        dense_spec = None
        if dense:  # before int8/fp16 replace the fp32 image encoder it is compared with
            from .dense import export_dense

            dense_spec = export_dense(model, tmp, images, tmp / IMAGE_ENCODER, dense_window_cells, opset,
                                      dense_min_cosine, weights=dense_weights)

        image_file, text_file = IMAGE_ENCODER, TEXT_ENCODER
        precision = {"image": "fp32", "text": "fp32"}
        if int8:
            image_file, text_file, parity["int8"] = _add_int8(tmp, built.image_is_transformer, images, ids, onnx_out)
            precision = {"image": "int8" if built.image_is_transformer else "fp32", "text": "int8"}
        if fp16:
            parity["fp16"] = _add_fp16(tmp, images, ids, onnx_out)
            image_file, text_file = IMAGE_ENCODER_FP16, TEXT_ENCODER_FP16
            precision = {"image": "fp16", "text": "fp16"}

        bundle = ModelBundle(
            name=name or checkpoint.stem,
            architecture=built.arch,
            embed_dim=embed_dim,
            image=built.image,
            text=text_spec,
            logit_scale=float(model.logit_scale.detach().exp().item()),
            templates=templates,
            source={"checkpoint": checkpoint.name, "sha256": file_sha256(checkpoint), **(source or {})},
            license=license,
            activation=built.activation,
            image_encoder=image_file,
            text_encoder=text_file,
            parity=parity,
            precision=precision,
            dense=dense_spec,
            card=_portable({**(card or {}), "image_tower": built.image_tower, "text_tower": built.text_tower,
                            "preprocess_source": built.preprocess_source,
                            "int8": bool(int8), **({"fp16": True} if fp16 else {}),
                            "onnx_opset": opset, "exported_with": _versions(),
                            **({"external_data_files": external} if external else {}),
                            "open_clip_config": built.config}),
        )
        bundle.write(tmp)  # model.json last: only now is the folder a bundle
        read_bundle(tmp)
    log.info("wrote bundle %s (image cos min %.6f, text cos min %.6f)", out_dir,
             parity["image_cosine_min"], parity["text_cosine_min"])
    return read_bundle(out_dir)

