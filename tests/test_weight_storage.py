"""float16 weight storage with float32 compute (rsclip_geo.export.weight_storage) on a tiny ONNX graph built here."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from rsclip_geo.errors import BundleError  # noqa: E402
from rsclip_geo.export.weight_storage import store_file_fp16, store_fp16, unstore_fp16  # noqa: E402

RNG = np.random.default_rng(11)
W1 = RNG.standard_normal((64, 32)).astype(np.float32)  # 2048 values: stored as float16
B1 = RNG.standard_normal(32).astype(np.float32)  # 32: stays float32
W2 = RNG.standard_normal((32, 40)).astype(np.float32) * 0.1  # 1280: float16
W3 = RNG.standard_normal((40, 20)).astype(np.float32)  # 800 < 1024: stays float32
SCALE = np.full((1, 20), 3.0, np.float32)


def _model(w1=W1, extra_input: bool = False):
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (B1, "b1"), (W2, "w2"), (W3, "w3"),
                                                        (SCALE, "scale"))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["g"]),
             helper.make_node("MatMul", ["g", "w3"], ["k"]), helper.make_node("Mul", ["k", "scale"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])]
    if extra_input:  # an initializer that is also a graph input: a default the caller may override
        inputs.append(helper.make_tensor_value_info("w2", TensorProto.FLOAT, [32, 40]))
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 20])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def _reference(x, w1=W1, w2=W2):
    return np.maximum(x @ w1 + B1, 0) @ w2 @ W3 * SCALE


def test_large_float32_weights_become_float16_with_casts(tmp_path):
    src, dst = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    onnx.save(_model(), str(src))
    figures = store_file_fp16(src, dst)
    assert figures["initializers"] == 2 and figures["values"] == W1.size + W2.size
    assert figures["bytes_before"] == src.stat().st_size and figures["bytes_after"] == dst.stat().st_size
    assert dst.stat().st_size < 0.7 * src.stat().st_size  # (2048 + 1280) x 2 bytes saved of ~16.6 kB

    m = onnx.load(str(dst))
    kinds = {t.name: (t.data_type, int(np.prod(t.dims))) for t in m.graph.initializer}
    assert not [n for n, (kind, size) in kinds.items() if kind == TensorProto.FLOAT and size >= 1024]
    assert kinds["w1__fp16"][0] == kinds["w2__fp16"][0] == TensorProto.FLOAT16
    assert kinds["b1"][0] == kinds["w3"][0] == kinds["scale"][0] == TensorProto.FLOAT  # small: untouched
    casts = [n for n in m.graph.node if n.op_type == "Cast"]
    assert sorted((n.input[0], n.output[0]) for n in casts) == [("w1__fp16", "w1"), ("w2__fp16", "w2")]
    assert all(helper.get_attribute_value(n.attribute[0]) == TensorProto.FLOAT for n in casts)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # the graph contract is unchanged
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT

    x = RNG.standard_normal((5, 64)).astype(np.float32)
    before, after = _run(src, x), _run(dst, x)
    assert after.dtype == np.float32
    np.testing.assert_allclose(before, _reference(x), rtol=1e-4, atol=1e-4)
    # exactly the fp32 graph with its large weights rounded to float16 ...
    rounded = _reference(x, W1.astype(np.float16).astype(np.float32), W2.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(after, rounded, rtol=1e-4, atol=1e-4)
    # ... which is within float16 rounding of the original, and not identical to it
    assert 0 < np.abs(after - before).max() <= 2e-3 * np.abs(before).max()
    assert 0 < figures["max_abs_rounding"] <= np.abs(W1).max() * 2.0 ** -11


def test_onnxruntime_folds_the_casts_into_float32_weights(tmp_path):
    """What keeps the speed: after onnxruntime's basic optimisations the graph has float32 weights, no casts."""
    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    store_file_fp16(src)  # in place
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert not [n for n in optimized.graph.node if n.op_type == "Cast"]
    assert not [t for t in optimized.graph.initializer if t.data_type == TensorProto.FLOAT16]


def test_initializers_that_are_graph_inputs_are_left_alone():
    model = _model(extra_input=True)
    figures = store_fp16(model)
    assert figures["initializers"] == 1  # w1 only: w2 can be overridden by the caller, so it keeps its type
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert kinds["w2"] == TensorProto.FLOAT and "w2__fp16" not in kinds
    onnx.checker.check_model(model)


def test_min_elements_is_the_threshold():
    model = _model()
    assert store_fp16(model, min_elements=500)["initializers"] == 3  # w3 (800) too now
    assert store_fp16(_model(), min_elements=10**6)["initializers"] == 0


def test_weights_beyond_float16_range_are_refused_and_nothing_is_written(tmp_path):
    w1 = W1.copy()
    w1[3, 4] = 1e5
    src, dst = tmp_path / "big.onnx", tmp_path / "out.onnx"
    onnx.save(_model(w1=w1), str(src))
    with pytest.raises(BundleError, match=r"big\.onnx.*'w1'.*float16"):
        store_file_fp16(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx"]


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "not_onnx.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(BundleError, match="not_onnx.onnx: cannot read ONNX model"):
        store_file_fp16(bad)


def test_unstore_gives_back_the_float32_graph_of_the_stored_weights(tmp_path):
    """The inverse of store_fp16: float32 initializers under their original names, no Cast, same outputs."""
    model = _model()
    store_fp16(model)
    stored = tmp_path / "stored.onnx"
    onnx.save(model, str(stored))
    assert unstore_fp16(model) == 2
    assert not [n for n in model.graph.node if n.op_type == "Cast"]
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert kinds == {"w1": TensorProto.FLOAT, "b1": TensorProto.FLOAT, "w2": TensorProto.FLOAT,
                     "w3": TensorProto.FLOAT, "scale": TensorProto.FLOAT}
    onnx.checker.check_model(model)
    back = tmp_path / "back.onnx"
    onnx.save(model, str(back))
    x = RNG.standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_array_equal(_run(back, x), _run(stored, x))  # float16 -> float32 is exact
    assert unstore_fp16(model) == 0  # nothing left to undo


def test_unstore_leaves_a_float16_tensor_that_other_nodes_read():
    model = _model()
    store_fp16(model)
    graph = model.graph
    graph.node.append(helper.make_node("Identity", ["w1__fp16"], ["w1_half_copy"]))  # a second reader
    graph.output.append(helper.make_tensor_value_info("w1_half_copy", TensorProto.FLOAT16, [64, 32]))
    assert unstore_fp16(model) == 1  # w2 only: folding w1's cast would leave the Identity without its input
    assert {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT16} == {"w1__fp16"}
    onnx.checker.check_model(model)


def test_full_float16_conversion_takes_a_graph_with_float16_stored_weights(tmp_path):
    """convert_fp16 (models export --fp16, bench/gpu_bench.py) on the shipped image encoder's storage form: the
    float16 converter refuses a graph already holding float16 tensors unless the storage is undone first."""
    pytest.importorskip("onnxconverter_common")
    from rsclip_geo.export.onnx_export import convert_fp16

    src, half = tmp_path / "stored.onnx", tmp_path / "half.onnx"
    onnx.save(_model(), str(src))
    store_file_fp16(src)
    convert_fp16(src, half)
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    out, ref = _run(half, x), _run(src, x)
    assert out.dtype == np.float32  # float32 graph input and output kept
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999
    assert any(t.data_type == TensorProto.FLOAT16 for t in onnx.load(str(half)).graph.initializer)


def test_inference_path_does_not_import_weight_storage():
    import subprocess
    import sys

    code = ("import sys, rsclip_geo, rsclip_geo.tasks.dense_map, rsclip_geo.runtime.encoder; "
            "print('rsclip_geo.export.weight_storage' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
