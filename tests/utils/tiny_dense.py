"""The tiny RGB bundle (tiny_bundle.py) plus a real dense head, built without torch.

Dense encoder: average of each ``stride x stride`` block of the normalised image (AveragePool), channels last,
times the identity projection: every cell's embedding is its mean colour, so 'red' scores high on red cells.
The mean of the cells of a model-size image is exactly the image embedding, like a conv-projection head.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.utils.tiny_bundle import build_tiny_bundle


def _dense_encoder(path: Path, stride: int) -> None:
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[stride, stride],
                          strides=[stride, stride]),
         helper.make_node("Transpose", ["pooled"], ["cells"], perm=[0, 2, 3, 1]),
         helper.make_node("MatMul", ["cells", "proj"], ["embedding"])],
        "tiny_dense",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", "rows", "cols", 3])],
        [numpy_helper.from_array(np.eye(3, dtype=np.float32), "proj")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def build_tiny_dense_bundle(folder: Path, size: int = 16, stride: int = 8, window: int = 64) -> Path:
    folder = build_tiny_bundle(Path(folder), size=size)
    _dense_encoder(folder / "dense_encoder.onnx", stride)
    data = json.loads((folder / "model.json").read_text())
    data["dense"] = {"method": "conv-projection", "stride": stride, "window": window, "file": "dense_encoder.onnx",
                     "parity": {"note": "hand-weighted test model"}}
    (folder / "model.json").write_text(json.dumps(data, indent=2))
    return folder
