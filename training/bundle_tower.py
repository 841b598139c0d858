"""A bundle's image tower as a trainable torch module, and trained weights written back into its ONNX graph.

Why: a stage that only refines the image tower (training/rotation_distill.py) starts from a shipped bundle, not
from a training checkpoint, and must leave the text encoder, dense head and tokenizer of that bundle byte for byte
as they were. The exporter folds every BatchNorm into the convolution before it and may store weights as float16
(rsclip_geo/export/weight_storage.py); here each folded convolution is loaded into the open_clip/timm tower built
from the bundle's own ``card.open_clip_config`` with its BatchNorm set to the identity, and written back folded,
in the dtype each initializer had. Both directions are checked on the packaged parity images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rsclip_geo.export import parity as par
from rsclip_geo.export.weight_storage import FP16_STORED_MIN_COSINE
from rsclip_geo.runtime.bundle import read_bundle
from rsclip_geo.runtime.preprocess import Preprocessor

IMPORT_MIN_COSINE = 0.9999  # torch tower vs the ONNX graph it was read from (fp32 arithmetic on the same weights)


class BundleTowerError(RuntimeError):
    """The bundle's image encoder does not have the layout this module reads; the message names the file."""


class _Graph(NamedTuple):
    """An image encoder's graph with the lookups this module needs."""
    model: object
    init: dict  # initializer name -> TensorProto
    through_cast: dict  # Cast output -> the float16 initializer it reads
    convs: list
    matmuls: list


def _graph(path: Path) -> _Graph:
    import onnx

    model = onnx.load(str(path))
    init = {i.name: i for i in model.graph.initializer}
    # float16-stored weights reach the Conv through a Cast node: follow it to the stored initializer
    through_cast = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in init}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    return _Graph(model, init, through_cast, convs, matmuls)


def _stored(name: str, init: dict, through_cast: dict, path: Path) -> str:
    stored = through_cast.get(name, name)
    if stored not in init:
        raise BundleTowerError(f"{path}: input {name!r} of a Conv/MatMul is not a stored weight "
                               "(computed in the graph)")
    return stored


def conv_bn_pairs(visual) -> list:
    """(Conv2d, BatchNorm2d or None) in forward order: what the exporter folds into one ONNX Conv each."""
    import torch

    mods = [m for m in visual.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    pairs, i = [], 0
    while i < len(mods):
        if not isinstance(mods[i], torch.nn.Conv2d):
            raise BundleTowerError(f"a BatchNorm2d without a convolution before it (module #{i})")
        bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], torch.nn.BatchNorm2d) else None
        pairs.append((mods[i], bn))
        i += 2 if bn is not None else 1
    return pairs


def _projection(visual):
    proj = getattr(getattr(visual, "head", None), "proj", None)
    if proj is None or proj.bias is not None:
        raise BundleTowerError("the tower has no bias-free linear projection head (timm_proj = 'linear')")
    return proj


def _parity_batch(bundle) -> np.ndarray:
    raw, _ = par.parity_images(None)
    return np.ascontiguousarray(Preprocessor(bundle.image)(raw), dtype=np.float32)


def _compare(visual, onnx_path: Path, images: np.ndarray) -> dict:
    visual.eval()
    a = par.ort_embed(par.ort_session(onnx_path), "image", images)
    b = par.torch_embed(visual, images)
    return {"cosine_min": float(par.cosine_rows(a, b).min()), "max_abs_diff": float(np.abs(a - b).max()),
            "n_images": int(len(images))}


def tower_from_bundle(folder: str | Path):
    """The bundle's image tower as an open_clip TimmModel in eval mode, weights read from its ONNX graph.

    BatchNorm layers become the identity (weight 1, running mean 0, running var 1 - eps) and carry the folded
    bias; keep them in eval mode while training (train mode would normalise by batch statistics)."""
    import torch
    from open_clip.model import _build_vision_tower

    bundle = read_bundle(folder)
    meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
    cfg = (meta.get("card") or {}).get("open_clip_config") or {}
    vision = dict(cfg.get("vision_cfg") or {})
    path = bundle.image_encoder_path
    if not vision.get("timm_model_name"):
        raise BundleTowerError(f"{Path(folder) / 'model.json'}: card.open_clip_config.vision_cfg names no timm "
                               "image tower; only timm convolutional towers are read back from ONNX")
    vision["timm_model_pretrained"] = False
    visual = _build_vision_tower(int(cfg["embed_dim"]), vision)
    from onnx import numpy_helper as nh

    _, init, through_cast, convs, matmuls = _graph(path)
    pairs = conv_bn_pairs(visual)
    if len(pairs) != len(convs) or len(matmuls) != 1:
        raise BundleTowerError(f"{path}: {len(convs)} Conv and {len(matmuls)} MatMul nodes; the tower "
                               f"{vision['timm_model_name']} has {len(pairs)} convolutions and one projection")
    with torch.no_grad():
        for k, ((conv, bn), node) in enumerate(zip(pairs, convs)):
            w = nh.to_array(init[_stored(node.input[1], init, through_cast, path)]).astype(np.float32)
            if tuple(conv.weight.shape) != w.shape:
                raise BundleTowerError(f"{path}: Conv #{k} weight {w.shape}, the tower's {tuple(conv.weight.shape)}")
            b = (nh.to_array(init[_stored(node.input[2], init, through_cast, path)]).astype(np.float32)
                 if len(node.input) > 2 else np.zeros(w.shape[0], np.float32))
            conv.weight.copy_(torch.from_numpy(w))
            if bn is None:
                if conv.bias is None:
                    raise BundleTowerError(f"{path}: Conv #{k} has a bias the tower's convolution cannot hold")
                conv.bias.copy_(torch.from_numpy(b))
            else:
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
        proj = _projection(visual)
        p = nh.to_array(init[_stored(matmuls[0].input[1], init, through_cast, path)]).astype(np.float32)
        if p.shape != tuple(proj.weight.shape)[::-1]:
            raise BundleTowerError(f"{path}: projection {p.shape}, the tower's {tuple(proj.weight.shape)[::-1]}")
        proj.weight.copy_(torch.from_numpy(np.ascontiguousarray(p.T)))
    got = _compare(visual, path, _parity_batch(bundle))
    if not got["cosine_min"] >= IMPORT_MIN_COSINE:
        raise BundleTowerError(f"{path}: the torch tower does not reproduce the graph ({got}); not a layout this "
                               "module can read")
    return visual


def write_tower(visual, src: str | Path, dst: str | Path) -> dict:
    """Write ``visual``'s weights (BatchNorm folded into each convolution) into a copy of the ONNX graph ``src``
    at ``dst``, every initializer in its own dtype; the graph is otherwise unchanged. Returns the count of values
    written and the largest rounding of a float16-stored value."""
    import onnx
    import torch

    src, dst = Path(src), Path(dst)
    from onnx import numpy_helper as nh

    model, init, through_cast, convs, matmuls = _graph(src)
    pairs = conv_bn_pairs(visual)
    if len(pairs) != len(convs) or len(matmuls) != 1:
        raise BundleTowerError(f"{src}: {len(convs)} Conv nodes for a tower of {len(pairs)} convolutions")
    written, rounding = 0, 0.0

    def put(name: str, value: np.ndarray) -> None:
        nonlocal written, rounding
        stored = init[_stored(name, init, through_cast, src)]
        old = nh.to_array(stored)
        if old.shape != value.shape:
            raise BundleTowerError(f"{src}: {stored.name} has shape {old.shape}, the tower gives {value.shape}")
        new = value.astype(old.dtype)
        rounding = max(rounding, float(np.abs(new.astype(np.float32) - value).max()))
        stored.CopyFrom(nh.from_array(new, stored.name))
        written += value.size

    with torch.no_grad():
        for (conv, bn), node in zip(pairs, convs):
            w, b = conv.weight.float(), (conv.bias.float() if conv.bias is not None else torch.zeros(conv.out_channels))
            if bn is not None:
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w, b = w * scale[:, None, None, None], (b - bn.running_mean) * scale + bn.bias
            put(node.input[1], w.numpy())
            if len(node.input) > 2:
                put(node.input[2], b.numpy())
            elif b.abs().max() > 0:
                raise BundleTowerError(f"{src}: a Conv node without bias, but the tower has one")
        put(matmuls[0].input[1], np.ascontiguousarray(_projection(visual).weight.float().numpy().T))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(dst)
    except BaseException:  # a full disk or a kill leaves no half graph under the real name
        tmp.unlink(missing_ok=True)
        raise
    return {"values": int(written), "max_abs_rounding": rounding}


def written_parity(visual, folder: str | Path, min_cosine: float = FP16_STORED_MIN_COSINE) -> dict:
    """Cosine of the bundle's (rewritten) image encoder to ``visual`` on the parity images; BundleTowerError below
    ``min_cosine`` (float16 storage rounds each weight; the bundle's fp16 check uses the same bound)."""
    bundle = read_bundle(folder)
    got = _compare(visual, bundle.image_encoder_path, _parity_batch(bundle))
    if not got["cosine_min"] >= min_cosine:
        raise BundleTowerError(f"{bundle.image_encoder_path}: written weights do not reproduce the trained tower "
                               f"({got}, required cosine >= {min_cosine})")
    return {**got, "min_cosine_required": float(min_cosine)}
