"""torch -> ONNX for the two CLIP encoders, and optional int8 or float16 versions.

The graphs follow the bundle contract: ``image`` [batch, 3, S, S] float32 or
``input_ids`` [batch, context] int64 in, ``embedding`` [batch, D] float32 out, not
normalised, batch axis dynamic. Hugging Face text towers compute their attention
mask inside the graph from ``input_ids != pad_id`` (open_clip's HFTextEncoder does
exactly that in ``forward``), so the runtime feeds ids only.

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


def export_encoders(model, image_example, ids_example, folder: Path, image_file: str, text_file: str,
                    opset: int = DEFAULT_OPSET) -> None:
    """Write the image and text encoders of ``model`` into ``folder``."""
    torch = require_torch()
    ImageEncoder, TextEncoder = _wrappers()
    image = torch.from_numpy(image_example)
    ids = torch.from_numpy(ids_example)
    try:
        _export(ImageEncoder(model), image, folder / image_file, "image", opset)
        _export(TextEncoder(model), ids, folder / text_file, "input_ids", opset)
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

    float16 = require_fp16_converter()
    model = onnx.load(str(src))
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
