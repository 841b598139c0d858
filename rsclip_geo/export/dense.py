"""The dense head: per-cell embeddings in the text space from one pass over a window larger than the model's input.

Two recipes, recorded as ``dense.method`` in model.json:

- ``conv-projection`` (open_clip ``TimmModel`` towers with average pooling and a linear projection, e.g. the
  default EfficientNet-Lite0): the trunk's last feature map [B, C, H/32, W/32], and the projection head applied to
  every cell instead of to the pooled vector. Pooling is a mean and the projection is linear, so the mean of the
  cells *is* the image embedding (checked at export, ``pooled_vs_image_cosine_min``).
- ``vit-maskclip`` (open_clip ``VisionTransformer`` with a class token): MaskCLIP-style (Zhou et al., ECCV 2022):
  patch tokens through the final LayerNorm and projection, with the last block's attention replaced by its value
  path (``x + out_proj(v(ln_1(x)))``, then the block's MLP as usual), so each token keeps its own content instead
  of a mix of global context. The positional table is resized (bicubic) to the window's patch grid.

Graph: ``image`` [batch, 3, H, W] (H, W dynamic, multiples of the stride) -> ``embedding`` [batch, H/s, W/s, D],
not normalised. The dense encoder computes in float32 (``--int8``/``--fp16`` leave it as is); by default its weights
are *stored* as float16 (``weights="fp16"``, ``models export --dense-weights fp16``; see ``weight_storage``): half the
file, the same float32 kernels once onnxruntime has folded the casts, parity still measured against torch.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..runtime.bundle import DENSE_ENCODER, DENSE_WEIGHTS_FP16, DenseSpec
from ..errors import BundleError
from ._deps import require_torch

log = logging.getLogger(__name__)

# The default window is the model's input size (4 x 4 cells for a 128 px EfficientNet): on the AID mosaics
# (bench/dense_eval.py, the shipped model) the pixel ROC AUC of the dense map fell from 0.977 with 128 px windows to
# 0.958 with 256 and 0.942 with 512 px windows (half-window overlap, native scale): a conv tower trained on 128 px
# images sees its cells near the image border; deep inside a large window their features drift. Larger windows
# (--dense-window) still work (the graph's H and W are dynamic) and are checked at export.


def _conv_parts(visual):
    """(trunk, projection Linear or None, stride) of a TimmModel whose image embedding is linear(mean(cells))."""
    torch = require_torch()
    trunk, head = getattr(visual, "trunk", None), getattr(visual, "head", None)
    if trunk is None or head is None or not hasattr(trunk, "forward_features"):
        return None
    pool = getattr(trunk, "global_pool", None)
    pool_type = getattr(pool, "pool_type", None)
    if pool_type != "avg" or getattr(trunk, "num_classes", 0):
        raise BundleError("--dense: the timm image tower must use average pooling and a separate projection head "
                          f"(open_clip timm_pool 'avg', timm_proj 'linear'); got pool {pool_type!r}")
    proj = None
    for name, module in head.named_children():
        if isinstance(module, torch.nn.Linear) and proj is None:
            proj = module
        elif not isinstance(module, (torch.nn.Dropout, torch.nn.Identity)):
            raise BundleError(f"--dense: the projection head has a {type(module).__name__} ({name}); the "
                              "conv-projection dense head needs a linear projection (timm_proj 'linear' or none)")
    reduction = None
    info = getattr(trunk, "feature_info", None)
    if info is not None:
        try:
            reduction = int(info[-1]["reduction"])
        except (TypeError, KeyError, IndexError):
            reduction = None
    return trunk, proj, reduction


def _trained_projection(proj, projection):
    """A bias-free Linear holding a trained dense projection [D, C] (training/dense_align.py) in place of the
    global one: same shape required."""
    torch = require_torch()
    weight = torch.as_tensor(np.asarray(projection, np.float32))
    want = tuple(proj.weight.shape) if proj is not None else None
    if weight.ndim != 2 or (want is not None and tuple(weight.shape) != want):
        raise BundleError(f"--dense projection: weight of shape {tuple(weight.shape)} does not replace the model's "
                          f"projection {want}")
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        out.weight.copy_(weight)
    return out


def _dense_module(model, projection=None):
    """(torch module image -> [B, h, w, D], method, stride) for ``model``'s image tower, or a BundleError.
    ``projection``: a trained dense projection [D, C] used instead of the global one (conv towers only)."""
    torch = require_torch()
    visual = model.visual
    if hasattr(visual, "trunk"):
        trunk, proj, stride = _conv_parts(visual)
        if stride is None:
            raise BundleError("--dense: cannot tell the timm trunk's output stride (feature_info)")
        if projection is not None:
            proj = _trained_projection(proj, projection)

        class ConvProjection(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.trunk, self.proj = trunk, proj

            def forward(self, image):
                x = self.trunk.forward_features(image).permute(0, 2, 3, 1)  # [B, h, w, C]
                return self.proj(x) if self.proj is not None else x

        return ConvProjection(), "conv-projection", stride
    if projection is not None:
        raise BundleError("--dense: a trained dense projection applies to conv towers (conv-projection) only")
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    if all(hasattr(visual, a) for a in needed):
        return _maskclip_module(visual), "vit-maskclip", int(visual.patch_size[0])
    raise BundleError(f"--dense: no dense recipe for image tower {type(visual).__name__}; supported: open_clip timm "
                      "conv towers (avg pool + linear projection) and open_clip VisionTransformers")


def _maskclip_module(visual):
    torch = require_torch()
    from .onnx_export import plain_self_attention

    if visual.attn_pool is not None or visual.final_ln_after_pool or visual.proj is None:
        raise BundleError("--dense: vit-maskclip needs a ViT with class-token pooling, the final LayerNorm before "
                          "pooling and a projection (no attentional pooler)")
    if visual.patch_size[0] != visual.patch_size[1]:
        raise BundleError(f"--dense: non-square patches {visual.patch_size} are not supported")
    last = visual.transformer.resblocks[-1]
    if not plain_self_attention(last):
        raise BundleError("--dense: the ViT's last block is not a plain self-attention block; no value-only path")
    gh, gw = visual.grid_size

    class MaskClip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual

        def forward(self, image):
            v = self.visual
            x = v.conv1(image)  # [B, width, h, w]
            h, w = x.shape[-2], x.shape[-1]
            x = x.flatten(2).transpose(1, 2)
            width = x.shape[-1]
            pos = v.positional_embedding.to(x.dtype)
            grid = pos[1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
            grid = torch.nn.functional.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
            grid = grid.permute(0, 2, 3, 1).reshape(1, -1, width)
            cls = (v.class_embedding + pos[0]).to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], 1, width)
            x = torch.cat([cls, x + grid], dim=1)
            x = v.ln_pre(x)
            for block in v.transformer.resblocks[:-1]:
                x = block(x)
            blk = v.transformer.resblocks[-1]
            mha = blk.attn.mha if hasattr(blk.attn, "mha") else blk.attn  # swapped for export, or not
            bias = mha.in_proj_bias[2 * width:] if mha.in_proj_bias is not None else None
            value = torch.nn.functional.linear(blk.ln_1(x), mha.in_proj_weight[2 * width:], bias)
            x = x + blk.ls_1(mha.out_proj(value))
            x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
            x = v.ln_post(x[:, 1:]) @ v.proj
            return x.reshape(x.shape[0], h, w, -1)

    return MaskClip()


def dense_windows(images: np.ndarray, window: int) -> np.ndarray:
    """A [n, 3, window, window] batch from preprocessed [N, 3, s, s] images: each output is a 2 x 2 (or more)
    mosaic of parity images, so the larger input is real imagery, not a stretched copy."""
    n, _, s, _ = images.shape
    k = -(-window // s)
    out = []
    for start in range(0, max(1, n - 1), 2):
        tiles = [images[(start + i) % n] for i in range(k * k)]
        rows = [np.concatenate(tiles[r * k:(r + 1) * k], axis=2) for r in range(k)]
        out.append(np.concatenate(rows, axis=1)[:, :window, :window])
    return np.ascontiguousarray(np.stack(out[:4]), dtype=np.float32)


DENSE_WEIGHT_CHOICES = ("fp16", "fp32")  # how export_dense stores the weights (fp32 compute either way)


def export_dense(model, folder: Path, images: np.ndarray, image_file: Path, window_cells: int | None = None,
                 opset: int = 17, min_cosine: float | None = None, weights: str = "fp16", projection=None) -> DenseSpec:
    """Write ``dense_encoder.onnx`` into ``folder``, check it against torch at the model's input size and at a
    larger non-square window, and return its DenseSpec (with the parity figures).

    ``projection``: a trained dense projection [D, C] (``python -m training.dense_align``) applied to every cell
    instead of the global projection; the mean of the cells is then no longer the image embedding, so their
    cosine is recorded (``pooled_vs_image_cosine_min``) but not required, and ``projection: trained`` is noted.
    ``min_cosine``: the parity bar per cell; default 0.9999 for fp32 weights, ``FP16_STORED_MIN_COSINE`` for
    float16-stored ones (rounded weights, measured against the fp32 torch model)."""
    torch = require_torch()
    import onnx

    from . import parity as par
    from .onnx_export import swapped_attention
    from .parity import DEFAULT_MIN_COSINE
    from .weight_storage import FP16_STORED_MIN_COSINE, store_file_fp16

    if weights not in DENSE_WEIGHT_CHOICES:  # "fp16": float16-stored weights, fp32 compute (weight_storage)
        raise BundleError(f"dense weights must be one of {DENSE_WEIGHT_CHOICES}, got {weights!r}")
    if min_cosine is None:
        min_cosine = FP16_STORED_MIN_COSINE if weights == "fp16" else DEFAULT_MIN_COSINE
    module, method, stride = _dense_module(model, projection)
    size = int(images.shape[-1])
    if size % stride:
        raise BundleError(f"--dense: image size {size} is not a multiple of the dense stride {stride}")
    window = size if window_cells is None else max(size, int(window_cells) * stride)
    path = folder / DENSE_ENCODER
    module.eval()
    example = torch.from_numpy(np.ascontiguousarray(images[:1]))
    swap = swapped_attention(model.visual.transformer) if method == "vit-maskclip" else _nullcontext()
    try:
        with swap, warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=["image"], output_names=["embedding"],
                              dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                            "embedding": {0: "batch", 1: "rows", 2: "cols"}},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        onnx.checker.check_model(str(path))
    except BundleError:
        raise
    except Exception as exc:  # exporter errors come in many types
        raise BundleError(f"dense ONNX export failed ({type(exc).__name__}: {exc})") from exc
    model.eval()
    storage = store_file_fp16(path) if weights == "fp16" else None  # parity below is measured on the stored file
    parity = _dense_parity(module, path, image_file, images, max(window, 2 * size), stride, method, min_cosine, par,
                           trained=projection is not None)
    if storage is not None:
        parity["weight_storage"] = storage
    log.info("dense head %s (%s weights): stride %d, window %d, parity %s", method, weights, stride, window, parity)
    return DenseSpec(method=method, stride=stride, window=window, file=DENSE_ENCODER, parity=parity,
                     weights=DENSE_WEIGHTS_FP16 if storage is not None else "fp32")


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _dense_parity(module, path: Path, image_file: Path, images: np.ndarray, window: int, stride: int, method: str,
                  min_cosine: float, par, trained: bool = False) -> dict:
    """torch vs onnxruntime on every cell at the model size, a ``window`` (>= 2 x the model size) and a
    non-square one."""
    torch = require_torch()
    session = par.ort_session(path)
    big = dense_windows(images, window)
    wide = np.ascontiguousarray(big[:2, :, : window // 2, :])  # non-square: H != W
    cosines, diffs, shapes = [], [], []
    for batch in (images, big, wide):
        for i in range(0, len(batch), 4):
            x = np.ascontiguousarray(batch[i:i + 4])
            with torch.no_grad():
                t = module(torch.from_numpy(x)).float().numpy()
            o = session.run(["embedding"], {"image": x})[0]
            want = (x.shape[0], x.shape[2] // stride, x.shape[3] // stride)
            if o.shape[:3] != want:
                raise BundleError(f"{path.name}: output shape {o.shape} for input {x.shape}, expected {want} x D")
            cosines.append(par.cosine_rows(t.reshape(-1, t.shape[-1]), o.reshape(-1, o.shape[-1])))
            diffs.append(float(np.abs(t - o).max()))
        shapes.append(f"{batch.shape[2]}x{batch.shape[3]}")
    cos = np.concatenate(cosines)
    figures = {"cosine_min": float(cos.min()), "max_abs_diff": float(max(diffs)), "cells": int(cos.size),
               "window_sizes": shapes, "min_cosine_required": float(min_cosine),
               "runtime": "onnxruntime CPUExecutionProvider"}
    if method == "conv-projection":  # the mean of the cells is the image embedding
        pooled = session.run(["embedding"], {"image": np.ascontiguousarray(images)})[0].mean(axis=(1, 2))
        image = par.ort_embed(par.ort_session(image_file), "image", images)
        figures["pooled_vs_image_cosine_min"] = float(par.cosine_rows(pooled, image).min())
    pooled_required = figures.get("pooled_vs_image_cosine_min", 1.0) if not trained else 1.0
    if trained:
        figures["projection"] = "trained (training/dense_align.py): pooled cells differ from the image embedding"
    if not figures["cosine_min"] >= min_cosine or not pooled_required >= min_cosine:
        raise BundleError(f"dense ONNX export does not reproduce the torch model: {figures} (required >= "
                          f"{min_cosine}); the bundle was not written")
    return figures
