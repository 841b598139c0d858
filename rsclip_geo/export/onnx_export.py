"""torch -> ONNX for the two CLIP encoders, and optional int8 or float16 versions.

The graphs follow the bundle contract: ``image`` [batch, 3, S, S] float32 or
``input_ids`` [batch, context] int64 in, ``embedding`` [batch, D] float32 out, not
normalised, batch axis dynamic. Hugging Face text towers compute their attention
mask inside the graph from ``input_ids != pad_id`` (open_clip's HFTextEncoder does
exactly that in ``forward``), so the runtime feeds ids only.

open_clip's own text transformer (OpenAI CLIP, RemoteCLIP, GeoRSCLIP...) adds its whole positional table and
its [context, context] causal mask, so traced as it is it only takes full-length ids. Where cutting trailing
padding is provably exact (causal mask + pooling at the EOT token, see ``dynamic_text_encoder``) it is exported
through a wrapper that slices both to ``input_ids.shape[1]``, with torch's MultiheadAttention traced as the same
math written with a symbolic length (``TraceableSelfAttention``): the graph's sequence axis stays symbolic. The
export's trimmed-vs-full check (``parity.trimmed_consistency``) still decides whether the bundle says so.

The TorchScript exporter (``dynamo=False``) is used: it handles open_clip,
timm and transformers models alike and keeps files < 2 GB self-contained.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ..errors import BundleError, MissingDependencyError
from ._deps import INSTALL_HINT, drop_root_messages, require_torch

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Dynamic int8 on MatMul/Gemm only: int8 convolutions run ~10x slower than fp32 in onnxruntime on CPU.
INT8_OP_TYPES = ("MatMul", "Gemm")
# The text encoder also gets its token-embedding table (Gather) in int8: for a BERT-size vocabulary that table
# is most of the file (MiniLM: 47 of 59 MB), and its accuracy cost was not measurable on AID zero-shot.
INT8_TEXT_OP_TYPES = ("MatMul", "Gemm", "Gather")


def _wrappers():
    torch = require_torch()

    class ImageEncoder(torch.nn.Module):
        """image -> unnormalised image embedding."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, image):
            return self.model.encode_image(image, normalize=False)

    class TextEncoder(torch.nn.Module):
        """input_ids -> unnormalised text embedding (HF towers mask ids == pad inside)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model.encode_text(input_ids, normalize=False)

    return ImageEncoder, TextEncoder


def _causal_mask_of(mask, n: int) -> bool:
    """``mask`` is open_clip's additive causal mask for ``n`` positions: 0 on and below the diagonal, -inf above."""
    torch = require_torch()
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (n, n) or not mask.is_floating_point():
        return False
    above = torch.ones(n, n, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.all(mask[~above] == 0)) and bool(torch.all(torch.isneginf(mask[above])))


def _own_text_tower(model):
    """(tower, pool type, eos id) of open_clip's built-in text transformer, else None (HF towers, others).

    CLIP keeps the tower's parts on the model itself (``text_pool_type``, ``text_eos_id``); CustomTextCLIP holds a
    ``TextTransformer`` as ``model.text`` (``pool_type``, ``eos_id``; appended CLS token and pad masks possible)."""
    parts = ("transformer", "token_embedding", "positional_embedding", "ln_final", "text_projection", "attn_mask")
    if all(hasattr(model, a) for a in parts) and hasattr(model, "text_pool_type"):
        return model, model.text_pool_type, getattr(model, "text_eos_id", None)
    text = getattr(model, "text", None)
    try:
        from open_clip.transformer import TextTransformer
    except ImportError:
        return None
    if isinstance(text, TextTransformer):
        if text.cls_emb is not None or text.use_pad_mask or text.output_tokens:
            return None  # CLS token appended after the padding (CoCa), padding masks, token outputs
        return text, text.pool_type, getattr(text, "eos_id", None)
    return None


def dynamic_text_encoder(model, pad_id: int | None):
    """A text-export module for open_clip's own text transformer with a truly dynamic sequence length, or None.

    Only where cutting trailing padding cannot change the embedding: a causal attention mask (a token sees
    itself and what comes before it) and pooling at a token that is never cut, i.e. ``argmax`` (the EOT token has
    the largest id; exact when padding is id 0, below every real token, so the first maximum lies before the
    cut) or ``eos`` (the first ``eos_id``, a non-pad token). Bi-directional masks and ``last``/``first``/``none``
    pooling keep the fixed-length export. The forward is ``CLIP.encode_text`` with the positional table and
    the causal mask sliced to ``input_ids.shape[1]`` (a size the tracer records as symbolic)."""
    torch = require_torch()
    found = _own_text_tower(model)
    if found is None or pad_id is None:
        return None
    tower, pool, eos_id = found
    n = int(tower.positional_embedding.shape[0])
    if not _causal_mask_of(getattr(tower, "attn_mask", None), n):
        return None
    if not ((pool == "argmax" and pad_id == 0) or (pool == "eos" and eos_id is not None and eos_id != pad_id)):
        return None
    from open_clip.transformer import text_global_pool

    class DynamicLengthTextEncoder(torch.nn.Module):
        """input_ids [batch, seq <= context] -> unnormalised text embedding, as encode_text at full length."""

        def __init__(self, model, in_text: bool):
            super().__init__()
            self.model = model
            self.in_text = in_text  # CustomTextCLIP: the tower is model.text; CLIP: the model itself
            self.pool, self.eos_id = pool, eos_id

        def text_transformer(self):
            return (self.model.text if self.in_text else self.model).transformer

        def forward(self, input_ids):
            t = self.model.text if self.in_text else self.model
            cast_dtype = t.transformer.get_cast_dtype()
            seq = input_ids.shape[1]  # traced as Shape -> Gather: the slices below follow the input's length
            x = t.token_embedding(input_ids).to(cast_dtype)
            x = x + t.positional_embedding[:seq].to(cast_dtype)
            x = t.transformer(x, attn_mask=t.attn_mask[:seq, :seq])
            x = t.ln_final(x)
            x = text_global_pool(x, input_ids, self.pool, eos_token_id=self.eos_id)
            if t.text_projection is not None:
                x = t.text_projection(x) if isinstance(t.text_projection, torch.nn.Linear) else x @ t.text_projection
            return x

    return DynamicLengthTextEncoder(model, tower is not model)


def _export(module, example, path: Path, input_name: str, opset: int) -> None:
    torch = require_torch()
    import onnx

    # eval() on the wrapper itself: the exporter restores the wrapper's mode afterwards, which
    # would otherwise switch the wrapped model to train mode (dropout, batch-norm updates).
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent Python branches
        # grad enabled: nn.MultiheadAttention's inference fast path has no ONNX export
        with torch.enable_grad():
            torch.onnx.export(
                module, (example,), str(path),
                input_names=[input_name], output_names=["embedding"],
                # text: the sequence axis is dynamic too, so the runtime may cut trailing padding
                dynamic_axes={input_name: {0: "batch", 1: "seq"} if input_name == "input_ids" else {0: "batch"},
                              "embedding": {0: "batch"}},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise BundleError(f"{path}: exported ONNX graph fails onnx.checker ({exc})") from exc


def _traceable_attention_cls():
    torch = require_torch()

    class TraceableSelfAttention(torch.nn.Module):
        """What ``nn.MultiheadAttention(x, x, x, need_weights=False, attn_mask=m)`` computes, with the sequence length
        left symbolic: torch's own ``multi_head_attention_forward`` reshapes with the traced length as a constant
        (pytorch/pytorch#122321), so its ONNX graph only runs at the example's length. Same weights, same math:
        packed in-projection, softmax(q k^T / sqrt(d) + mask) v per head, out-projection."""

        def __init__(self, mha):
            super().__init__()
            self.mha = mha

        def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **_):
            m = self.mha
            x = query if m.batch_first else query.transpose(0, 1)  # [batch, seq, width]
            q, k, v = torch.nn.functional.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, dim=-1)
            q, k, v = (t.unflatten(-1, (m.num_heads, m.head_dim)).transpose(1, 2) for t in (q, k, v))
            w = torch.matmul(q, k.transpose(-2, -1)) * (float(m.head_dim) ** -0.5)
            if attn_mask is not None:
                w = w + attn_mask
            out = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2).flatten(2)
            out = torch.nn.functional.linear(out, m.out_proj.weight, m.out_proj.bias)
            return (out if m.batch_first else out.transpose(0, 1)), None

    return TraceableSelfAttention


def plain_self_attention(block) -> bool:
    """``block`` is open_clip's ResidualAttentionBlock with a plain self-attention ``nn.MultiheadAttention``."""
    torch = require_torch()
    try:
        from open_clip.transformer import ResidualAttentionBlock
    except ImportError:
        return False
    mha = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
            and type(mha) is torch.nn.MultiheadAttention and mha._qkv_same_embed_dim
            and mha.in_proj_weight is not None and mha.bias_k is None and mha.bias_v is None
            and not mha.add_zero_attn)


class swapped_attention:
    """While exporting: each plain self-attention of ``transformer`` runs as ``TraceableSelfAttention``."""

    def __init__(self, transformer):
        self.blocks = [b for b in getattr(transformer, "resblocks", ()) if plain_self_attention(b)]

    def __enter__(self):
        cls = _traceable_attention_cls()
        self.saved = [b.attn for b in self.blocks]
        for b in self.blocks:
            b.attn = cls(b.attn)
        return self

    def __exit__(self, *exc):
        for b, attn in zip(self.blocks, self.saved):
            b.attn = attn
        return False


def export_encoders(model, image_example, ids_example, folder: Path, image_file: str, text_file: str,
                    opset: int = DEFAULT_OPSET, pad_id: int | None = None) -> None:
    """Write the image and text encoders of ``model`` into ``folder``.

    ``pad_id``: the tokenizer's padding id; with it, open_clip's own text transformer is exported with a dynamic
    sequence length where that is exact (``dynamic_text_encoder``)."""
    torch = require_torch()
    ImageEncoder, TextEncoder = _wrappers()
    image = torch.from_numpy(image_example)
    ids = torch.from_numpy(ids_example)
    text_module = dynamic_text_encoder(model, pad_id)
    if text_module is not None:
        log.info("text tower: open_clip's own causal transformer, exported with a dynamic sequence length")
    try:
        _export(ImageEncoder(model), image, folder / image_file, "image", opset)
        if text_module is None:
            _export(TextEncoder(model), ids, folder / text_file, "input_ids", opset)
        else:
            with swapped_attention(text_module.text_transformer()):
                _export(text_module, ids, folder / text_file, "input_ids", opset)
    except BundleError:
        raise
    except Exception as exc:  # exporter errors come in many types
        raise BundleError(f"ONNX export failed ({type(exc).__name__}: {exc})") from exc
    model.eval()


def quantize_int8(src: Path, dst: Path, op_types: tuple[str, ...] = INT8_OP_TYPES) -> None:
    """Dynamic int8 weights for ``op_types`` (activations quantised on the fly)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # the quantizer logs one INFO line per tensor on the root logger
    try:
        # onnxruntime suggests its pre-processing step on every call; dynamic MatMul quantisation needs none
        with warnings.catch_warnings(), drop_root_messages("Please consider to run pre-processing"):
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types),
                             weight_type=QuantType.QInt8)
    finally:
        logging.disable(previous)


def require_fp16_converter():
    """onnxconverter-common's float16 module (in the export extra), or one clear error."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise MissingDependencyError(f"--fp16 needs onnxconverter-common (the export extra): {INSTALL_HINT}") from exc
    return float16


def convert_fp16(src: Path, dst: Path) -> None:
    """float16 weights and compute, float32 graph input and output (``keep_io_types``), for CUDA.

    The graph's own Cast-to-float32 nodes (shape arithmetic of 'same' padding, the attention mask) stay float32
    with a cast to float16 after them: converted in place they would contradict their declared output type.
    Constants beyond float16's range are clipped by the converter (to +-1e4, e.g. the attention mask's -inf)."""
    import onnx

    from .weight_storage import unstore_fp16

    float16 = require_fp16_converter()
    model = onnx.load(str(src))
    unstore_fp16(model)  # a bundle whose weights are float16-*stored* (the shipped image encoder) converts too
    for i, node in enumerate(model.graph.node):
        if not node.name:  # the block list goes by node name
            node.name = f"{node.op_type}_unnamed_{i}"
    keep_fp32 = [n.name for n in model.graph.node if n.op_type == "Cast"
                 and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per weight below float16's smallest normal number
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep_fp32)
    onnx.save(converted, str(dst))
    try:
        onnx.checker.check_model(str(dst))
    except Exception as exc:
        raise BundleError(f"{dst}: float16 graph fails onnx.checker ({exc})") from exc
