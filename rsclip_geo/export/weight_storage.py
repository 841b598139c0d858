"""Half the disk size, the same kernels: float16 *storage* of an ONNX graph's float32 weights.

``store_fp16`` replaces every float32 initializer with at least ``min_elements`` values (the convolution and
projection weights; biases and scalars stay float32) by a float16 initializer and a ``Cast(to=FLOAT)`` node that
produces the original name. Nothing else in the graph changes: its inputs, outputs and every operator still see
float32. onnxruntime folds the casts into float32 initializers when the session is created (constant folding,
any optimisation level above "disabled"), so inference runs the same float32 kernels at the same speed; only the
weights are rounded to float16 (a relative error <= 2^-11 per value).

Used by the export for the dense head (``--dense-weights fp16``, the default): the dense head is a second copy of
the image trunk, and this keeps it at half its fp32 size. ``store_bundle_dense_fp16`` does the same to an existing
bundle's fp32 dense head without torch, and records the parity against the head it replaces.

Export-only: needs the ``onnx`` package (the export extra); the inference path never imports this module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, MissingDependencyError
from ..runtime.bundle import DENSE_WEIGHTS_FP16, read_bundle

MIN_ELEMENTS = 1024
# Parity gate of float16-*stored* weights against the fp32 model (per cell or per embedding): rounding every weight
# to 2^-11 relative error moves the cells of a 20-odd-layer conv trunk to cosines near 0.9998 (the v2.2 default's
# dense head: 0.99980; pooled embeddings average it away, 0.999998), while a broken conversion (overflow to inf, a
# lost cast) falls far below. Also the bar of fully float16 encoders (export.FP16_MIN_COSINE); fp32 exports keep
# parity.DEFAULT_MIN_COSINE (0.9999).
FP16_STORED_MIN_COSINE = 0.999
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
CAST_SUFFIX = "__fp16"


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("float16 weight storage needs the onnx package (the export extra): "
                                     "pip install 'rsclip-geo[export]'") from exc
    return onnx


def store_fp16(model, min_elements: int = MIN_ELEMENTS, where: str = "model") -> dict[str, Any]:
    """Rewrite ``model`` (an ``onnx.ModelProto``, changed in place): float32 initializers of the main graph with
    >= ``min_elements`` values become float16 initializers + Cast(to=FLOAT) nodes named for the original tensor.

    Initializers that are also graph inputs (overridable at run time) are left alone. Returns what was done:
    {"initializers", "values", "min_elements", "max_abs_rounding", "compute"}. Raises BundleError, naming the
    tensor, when a weight does not fit in float16 (|x| > 65504)."""
    onnx = _onnx()
    from onnx import numpy_helper

    graph = model.graph
    inputs = {i.name for i in graph.input}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | inputs
    casts, count, values, worst = [], 0, 0, 0.0
    for tensor in graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT or tensor.name in inputs:
            continue
        array = numpy_helper.to_array(tensor)
        if array.size < min_elements:
            continue
        peak = float(np.abs(array).max()) if array.size else 0.0
        if not np.isfinite(array).all() or peak > FP16_MAX:
            raise BundleError(f"{where}: initializer {tensor.name!r} has values beyond float16's range "
                              f"(max |x| {peak:g} > {FP16_MAX:g}); keep this graph's weights in float32")
        half = array.astype(np.float16)
        worst = max(worst, float(np.abs(half.astype(np.float32) - array).max()) if array.size else 0.0)
        name = tensor.name
        stored = _unique(name + CAST_SUFFIX, taken)
        tensor.CopyFrom(numpy_helper.from_array(half, stored))
        casts.append(onnx.helper.make_node("Cast", [stored], [name], name=_unique(f"{name}_cast", taken),
                                           to=onnx.TensorProto.FLOAT))
        count, values = count + 1, values + int(array.size)
    if casts:  # first, so the graph stays topologically sorted
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(casts + nodes)
    return {"initializers": count, "values": values, "min_elements": int(min_elements),
            "max_abs_rounding": worst, "compute": "fp32 (Cast nodes folded by onnxruntime at session start)"}


def unstore_fp16(model) -> int:
    """Undo ``store_fp16`` on ``model`` (changed in place): each float16 initializer read only by a Cast(to=FLOAT)
    node becomes the float32 initializer of that node's output name, and the Cast goes (float16 -> float32 is
    exact, so the graph computes what it did). Needed before a full float16 conversion, which refuses a graph
    holding float16 tensors. Returns the number of initializers restored."""
    onnx = _onnx()
    from onnx import numpy_helper

    graph = model.graph
    half = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    drop = set()  # node indices: protobuf's Python wrappers have no stable id()
    for index, node in enumerate(graph.node):
        if (node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in half
                and readers.get(node.input[0]) == 1 and node.output[0] not in outputs
                and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute)):
            tensor = half[node.input[0]]
            array = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(array, node.output[0]))
            drop.add(index)
    if drop:
        nodes = [n for k, n in enumerate(graph.node) if k not in drop]
        del graph.node[:]
        graph.node.extend(nodes)
    return len(drop)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def store_file_fp16(src: str | os.PathLike, dst: str | os.PathLike | None = None,
                    min_elements: int = MIN_ELEMENTS) -> dict[str, Any]:
    """``store_fp16`` on the ONNX file ``src``, written (checked, atomically) to ``dst`` (default: ``src``
    itself). Returns the figures of ``store_fp16`` plus the file sizes in bytes before and after."""
    onnx = _onnx()
    src = Path(src)
    dst = src if dst is None else Path(dst)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise BundleError(f"{src}: cannot read ONNX model ({type(exc).__name__}: {exc})") from exc
    figures = store_fp16(model, min_elements, where=str(src))
    before = src.stat().st_size
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {**figures, "bytes_before": before, "bytes_after": dst.stat().st_size}


def compare_dense_heads(reference: Path, candidate: Path, images: np.ndarray, stride: int,
                        window: int) -> dict[str, Any]:
    """Cosine / max abs difference per cell between two dense heads (onnxruntime CPU) on ``images`` (preprocessed
    [N, 3, s, s]) at the model size, a ``window`` mosaic and a non-square half of it (as the export checks)."""
    from . import parity as par
    from .dense import dense_windows

    ref, cand = par.ort_session(reference), par.ort_session(candidate)
    big = dense_windows(images, window)
    wide = np.ascontiguousarray(big[:2, :, : window // 2, :])
    cosines, diffs, shapes = [], [], []
    for batch in (np.ascontiguousarray(images, dtype=np.float32), big, wide):
        for i in range(0, len(batch), 4):
            x = np.ascontiguousarray(batch[i:i + 4])
            a = ref.run(["embedding"], {"image": x})[0]
            b = cand.run(["embedding"], {"image": x})[0]
            if a.shape != b.shape or a.shape[1:3] != (x.shape[2] // stride, x.shape[3] // stride):
                raise BundleError(f"{candidate}: output shape {b.shape} for input {x.shape} (reference {a.shape})")
            cosines.append(par.cosine_rows(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
            diffs.append(float(np.abs(a - b).max()))
        shapes.append(f"{batch.shape[2]}x{batch.shape[3]}")
    cos = np.concatenate(cosines)
    return {"cosine_min": float(cos.min()), "max_abs_diff": float(max(diffs)), "cells": int(cos.size),
            "window_sizes": shapes}


def store_bundle_dense_fp16(folder: str | os.PathLike, min_cosine: float = FP16_STORED_MIN_COSINE,
                            min_elements: int = MIN_ELEMENTS) -> dict[str, Any]:
    """Store the fp32 dense head of the bundle in ``folder`` as float16 weights (no torch needed) and record in
    model.json's dense block the parity against the fp32 head it replaces (packaged parity images; the head's
    earlier torch parity is kept as ``parity.fp32_vs_torch``). Returns the new dense block.

    Raises BundleError when the bundle has no dense head, it is already fp16-stored, or the new head's cosine to
    the old one falls below ``min_cosine`` (then nothing in the folder changes)."""
    from dataclasses import asdict, replace

    from ..runtime.preprocess import Preprocessor
    from . import parity as par

    bundle = read_bundle(folder)
    if bundle.dense is None:
        raise BundleError(f"{folder}: the bundle has no dense head (model.json has no 'dense' block)")
    if bundle.dense.weights != "fp32":
        raise BundleError(f"{bundle.dense_encoder_path}: dense weights are already {bundle.dense.weights!r}")
    path = bundle.dense_encoder_path
    raw, info = par.parity_images(None)
    images = Preprocessor(bundle.image)(raw)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        storage = store_file_fp16(path, tmp, min_elements)
        window = max(bundle.dense.window, 2 * bundle.image.size)
        figures = compare_dense_heads(path, tmp, images, bundle.dense.stride, window)
        if not figures["cosine_min"] >= min_cosine:
            raise BundleError(f"{path}: float16-stored weights change the dense cells too much ({figures}, "
                              f"required cosine >= {min_cosine}); the bundle was not changed")
        parity: dict[str, Any] = {**figures, "min_cosine_required": float(min_cosine),
                                  "compared_to": f"the fp32 {path.name} it replaces (onnxruntime, no torch)",
                                  "inputs": info, "runtime": "onnxruntime CPUExecutionProvider"}
        if bundle.dense.method == "conv-projection":
            pooled = par.ort_session(tmp).run(["embedding"], {"image": images})[0].mean(axis=(1, 2))
            image = par.ort_embed(par.ort_session(bundle.image_encoder_path), "image", images)
            parity["pooled_vs_image_cosine_min"] = float(par.cosine_rows(pooled, image).min())
        parity["weight_storage"] = storage
        parity["fp32_vs_torch"] = dict(bundle.dense.parity)
        dense = replace(bundle.dense, weights=DENSE_WEIGHTS_FP16, parity=parity)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace(bundle, dense=dense).write(folder)
    read_bundle(folder)
    return asdict(dense)


def store_bundle_image_fp16(folder: str | os.PathLike, min_cosine: float = FP16_STORED_MIN_COSINE,
                            min_elements: int = MIN_ELEMENTS) -> dict[str, Any]:
    """Store the fp32 image encoder of the bundle in ``folder`` as float16 weights (no torch needed); record in
    model.json (``image_weights``, ``parity.image_weight_storage``) the cosine of its embeddings to the encoder
    it replaces on the packaged parity images. Returns that record.

    Why: a larger image tower (EfficientNet-Lite1) with its dense head does not fit the 50 MB bundle budget in
    fp32; float16 storage halves the file and keeps the float32 kernels. Raises BundleError when the encoder is
    not fp32 or already fp16-stored, or the embeddings move below ``min_cosine`` (then nothing changes)."""
    from dataclasses import replace

    from ..runtime.preprocess import Preprocessor
    from . import parity as par

    bundle = read_bundle(folder)
    path = bundle.image_encoder_path
    if bundle.precision_of("image") != "fp32":
        raise BundleError(f"{path}: float16 weight storage needs an fp32 image encoder, this one is "
                          f"{bundle.precision_of('image')}")
    if bundle.image_weights != "fp32":
        raise BundleError(f"{path}: image weights are already {bundle.image_weights!r}")
    raw, info = par.parity_images(None)
    images = np.ascontiguousarray(Preprocessor(bundle.image)(raw), dtype=np.float32)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        storage = store_file_fp16(path, tmp, min_elements)
        before = par.ort_embed(par.ort_session(path), "image", images)
        after = par.ort_embed(par.ort_session(tmp), "image", images)
        cos = par.cosine_rows(before, after)
        record = {"cosine_min": float(cos.min()), "max_abs_diff": float(np.abs(before - after).max()),
                  "n_images": int(len(images)), "min_cosine_required": float(min_cosine),
                  "compared_to": f"the fp32 {path.name} it replaces (onnxruntime, no torch)", "inputs": info,
                  "runtime": "onnxruntime CPUExecutionProvider", "weight_storage": storage}
        if not record["cosine_min"] >= min_cosine:
            raise BundleError(f"{path}: float16-stored weights change the image embeddings too much ({record}, "
                              f"required cosine >= {min_cosine}); the bundle was not changed")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace(bundle, image_weights=DENSE_WEIGHTS_FP16,
            parity={**bundle.parity, "image_weight_storage": record}).write(folder)
    read_bundle(folder)
    return record
