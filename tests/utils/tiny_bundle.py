"""A tiny, hand-weighted but real CLIP-style ONNX bundle, built without torch.

Image embedding = mean normalised (R, G, B) of the image; text embedding = sum
of per-token vectors where the CLIP BPE tokens of 'red', 'green', 'blue' point
along the R, G, B axes. So the label 'red' matches red tiles: enough to check
tiling, masking, scoring and outputs end to end through onnxruntime.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rsclip_geo.runtime.bundle import FORMAT_VERSION, ImageSpec, ModelBundle, TextSpec
from rsclip_geo.runtime.tokenizers import ClipBpeTokenizer

VOCAB = Path(__import__("rsclip_geo").__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"
COLOURS = ("red", "green", "blue")


def _image_encoder(path: Path, size: int, top_half: bool = False) -> None:
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "proj")
    consts = [w]
    nodes = [helper.make_node("ReduceMean", ["seen" if top_half else "image"], ["pooled"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["pooled", "proj"], ["embedding"])]
    if top_half:  # only rows [0, size/2) count: a model that knows which way is up
        consts += [numpy_helper.from_array(np.array([v], np.int64), n)
                   for v, n in ((0, "starts"), (size // 2, "ends"), (2, "slice_axes"))]
        nodes.insert(0, helper.make_node("Slice", ["image", "starts", "ends", "slice_axes"], ["seen"]))
    graph = helper.make_graph(
        nodes, "tiny_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
        consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _text_encoder(path: Path, context: int, tokenizer: ClipBpeTokenizer) -> None:
    table = np.zeros((49408, 3), dtype=np.float32)
    for axis, word in enumerate(COLOURS):
        ids = tokenizer([word])[0]
        token = int(ids[1])  # [sot, word, eot, 0...]
        table[token, axis] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["vectors"], axis=0),
         helper.make_node("ReduceSum", ["vectors", "axes"], ["embedding"], keepdims=0)],
        "tiny_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", context])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_tiny_bundle(folder: Path, size: int = 16, context: int = 8, top_half: bool = False) -> Path:
    """``top_half``: the image embedding is the mean colour of the image's top half only (rotation tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(VOCAB, folder / VOCAB.name)
    tokenizer = ClipBpeTokenizer(folder / VOCAB.name, context_length=context)
    _image_encoder(folder / "image_encoder.onnx", size, top_half)
    _text_encoder(folder / "text_encoder.onnx", context, tokenizer)
    ModelBundle(
        name="tiny-rgb", architecture="tiny-rgb (hand-weighted test model)", embed_dim=3,
        image=ImageSpec(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"),
        text=TextSpec(context_length=context, tokenizer="clip_bpe", tokenizer_file=VOCAB.name, pad_id=0),
        logit_scale=10.0, templates=("{}",), source={"repo": "tests"}, license="Apache-2.0",
        format_version=FORMAT_VERSION,
    ).write(folder)
    return folder
