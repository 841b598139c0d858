"""torch -> ONNX for the two CLIP encoders, and optional int8 weights.

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

from ..errors import BundleError
from ._deps import drop_root_messages, require_torch

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
