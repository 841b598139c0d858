"""The onnxruntime runtime: providers, batching, normalisation, prompt ensembles."""

import numpy as np
import onnxruntime as ort
import pytest

import rsclip_geo
from rsclip_geo.errors import DeviceError
from tests.utils.rasters import BLUE, GREEN, RED


def _solid(colour, size=20):
    return np.broadcast_to(np.array(colour, np.uint8), (size, size, 3)).copy()


def test_cpu_provider_reported(tiny_model):
    assert tiny_model.provider == "CPUExecutionProvider"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA present")
def test_cuda_request_without_cuda_is_clear(tiny_bundle):
    with pytest.raises(DeviceError, match="onnxruntime-gpu"):
        rsclip_geo.load_model(tiny_bundle, device="cuda")


def test_auto_device_falls_back_to_cpu(tiny_bundle):
    model = rsclip_geo.load_model(tiny_bundle, device="auto", threads=1)
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert model.provider == expected


def test_unknown_device(tiny_bundle):
    with pytest.raises(DeviceError, match="unknown device"):
        rsclip_geo.load_model(tiny_bundle, device="tpu")


@pytest.mark.parametrize("option,value,message", [
    ("batch_size", 0, "batch_size must be 1-4096"), ("batch_size", 10**9, "batch_size must be 1-4096"),
    ("batch_size", True, "batch_size"), ("threads", 0, "threads must be 1-1024"),
    ("threads", 999_999_999, "threads must be 1-1024")])  # onnxruntime itself said std::bad_alloc
def test_batch_size_and_threads_out_of_range_are_named(tiny_bundle, option, value, message):
    with pytest.raises(rsclip_geo.OptionError, match=message):
        rsclip_geo.load_model(tiny_bundle, device="cpu", **{option: value})


def test_cli_caps_batch_size_and_threads_and_reports_running_out_of_memory(tiny_bundle, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from rsclip_geo.cli import main
    from rsclip_geo.raster import tile_stream
    from tests.utils.rasters import colour_blocks, write_geotiff

    scene = write_geotiff(tmp_path / "s.tif", colour_blocks([[RED, GREEN]], 16))
    base = ["tile-classify", str(scene), "--labels", "red,green", "--model", str(tiny_bundle), "-q"]
    for option, value in (("--batch-size", "999999999"), ("--threads", "999999999")):
        r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o.gpkg"), option, value])
        assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output, r.output

    def no_memory(*args, **kwargs):
        raise np.core._exceptions._ArrayMemoryError((10**9, 3, 16, 16), np.dtype(np.float32))
    monkeypatch.setattr(tile_stream, "_produce", no_memory)  # what a scene too large for this machine does
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o.gpkg")])
    assert r.exit_code == 1 and "Error: out of memory (Unable to allocate" in r.output, r.output
    assert "--batch-size" in r.output and not (tmp_path / "o.gpkg").exists()


def test_batching_does_not_change_results(tiny_bundle):
    images = [_solid(c, 10 + 3 * i) for i, c in enumerate([RED, GREEN, BLUE, RED, GREEN])]
    one = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=1).encode_images(images)
    many = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=4).encode_images(images)
    np.testing.assert_allclose(one, many, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, rtol=1e-6)


def test_image_embedding_is_mean_normalised_colour(tiny_model):
    """The tiny model's image embedding is the mean of (x/255 - 0.5)/0.5: check through the real preprocessing."""
    emb = tiny_model.encode_images([_solid(RED)], normalize=False)[0]
    expected = (np.array(RED) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(emb, expected, atol=1e-5)


def test_zero_shot_probabilities(tiny_model):
    classes = tiny_model.class_embeddings(["red", "green", "blue"])
    images = tiny_model.encode_images([_solid(BLUE), _solid(RED), _solid(GREEN)])
    probs = tiny_model.probabilities(images, classes)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert list(probs.argmax(axis=1)) == [2, 0, 1]


def test_label_prompts_override_templates(tiny_model):
    """A label with its own prompts is scored by those prompts, not by its name."""
    from rsclip_geo.runtime.prompts import Label

    classes = tiny_model.class_embeddings([Label("water", ("blue",)), Label("vegetation", ("green",))])
    probs = tiny_model.probabilities(tiny_model.encode_images([_solid(BLUE), _solid(GREEN)]), classes)
    assert list(probs.argmax(axis=1)) == [0, 1]


def test_text_batches(tiny_bundle):
    texts = ["red", "green", "blue", "red green", "nothing"]
    a = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=2).encode_text(texts)
    b = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=8).encode_text(texts)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a[3], np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)


# ---- IO binding (used on CUDA; bound to CPU memory here) -------------------------------
def test_io_binding_is_off_on_cpu_by_default(tiny_model):
    assert tiny_model.io_binding is False


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_io_binding_gives_the_same_embeddings_as_plain_run(tiny_bundle, batch_size):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (12 + i, 20 - i, 3), dtype=np.uint8) for i in range(7)]
    plain = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=batch_size, io_binding=False)
    bound = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=batch_size, io_binding=True)
    assert bound.io_binding and "io_binding=True" in repr(bound)
    np.testing.assert_array_equal(bound.encode_images(images, normalize=False),
                                  plain.encode_images(images, normalize=False))
    batch = plain.preprocess(images)
    np.testing.assert_array_equal(bound.encode_batch(batch), plain.encode_batch(batch))
    np.testing.assert_array_equal(bound.encode_images(batch), plain.encode_images(batch))
    assert bound.encode_images([]).shape == (0, 3)


# ---- fixed batch shape (used on CUDA: each new input shape costs a cuDNN algorithm search) -----
def test_fixed_batch_is_off_on_cpu_by_default(tiny_model):
    assert tiny_model.fixed_batch is False and "fixed_batch" not in repr(tiny_model)


def _record_shapes(model, attr):
    shapes, run = [], getattr(model, attr)
    setattr(model, attr, lambda batch: shapes.append(batch.shape) or run(batch))
    return shapes


@pytest.mark.parametrize("io_binding", [False, True])
def test_fixed_batch_pads_the_short_batch_and_gives_the_same_embeddings(tiny_bundle, io_binding):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(7)]
    plain = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=3, io_binding=io_binding)
    fixed = rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=3, io_binding=io_binding, fixed_batch=True)
    assert fixed.fixed_batch and "fixed_batch=True" in repr(fixed)
    seen = _record_shapes(fixed, "_run_image")
    emb = fixed.encode_images(images, normalize=False)
    assert emb.shape == (7, 3)
    assert [s[0] for s in seen] == [3, 3, 3]  # 3 + 3 + 1 tiles, the last batch padded with zero rows
    np.testing.assert_allclose(emb, plain.encode_images(images, normalize=False), rtol=1e-5, atol=1e-6)
    assert fixed.encode_images([]).shape == (0, 3)


def test_fixed_batch_pads_dense_batches_too(tmp_path):
    """The shipped bundle's dense head, 2 windows at batch size 4: padded to 4, the 2 real results kept."""
    plain = rsclip_geo.load_model(None, device="cpu", batch_size=4)
    fixed = rsclip_geo.load_model(None, device="cpu", batch_size=4, fixed_batch=True)
    size = plain.bundle.image.size
    windows = np.random.default_rng(2).standard_normal((2, 3, size, size)).astype(np.float32)
    seen = []
    session = fixed._dense_session()
    run = session.run
    fixed._dense = type("Recorder", (), {"run": lambda self, out, feed: seen.append(feed["image"].shape)
                                          or run(out, feed)})()
    got = fixed.encode_dense(windows)
    assert [s[0] for s in seen] == [4]
    np.testing.assert_allclose(got, plain.encode_dense(windows), rtol=1e-4, atol=1e-5)


# ---- float16 bundles on CPU --------------------------------------------------------------
def _edit_model_json(folder, **fields):
    import json

    path = folder / "model.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture()
def fp16_bundle(tiny_bundle, tmp_path):
    """The tiny bundle with both encoders converted by the exporter's float16 conversion (export extra)."""
    import shutil

    pytest.importorskip("onnxconverter_common")
    from rsclip_geo.export.onnx_export import convert_fp16

    dst = tmp_path / "fp16"
    shutil.copytree(tiny_bundle, dst)
    for enc in ("image", "text"):
        convert_fp16(dst / f"{enc}_encoder.onnx", dst / f"{enc}_encoder.fp16.onnx")
        (dst / f"{enc}_encoder.onnx").unlink()
    _edit_model_json(dst, image_encoder="image_encoder.fp16.onnx", text_encoder="text_encoder.fp16.onnx",
                     precision={"image": "fp16", "text": "fp16"})
    return dst


def test_fp16_bundle_on_cpu_runs_close_to_fp32_or_is_refused(fp16_bundle, tiny_bundle, caplog):
    """onnxruntime's CPU provider runs these float16 graphs (it computes in float32 where it has no float16
    kernel): then the embeddings must match fp32. Were it unable to, loading must say to use CUDA."""
    import onnx

    graph = onnx.load(str(fp16_bundle / "image_encoder.fp16.onnx")).graph
    assert {i.data_type for i in graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    try:
        with caplog.at_level("WARNING", logger="rsclip_geo.runtime.encoder"):
            fp16 = rsclip_geo.load_model(fp16_bundle, device="cpu")
    except DeviceError as exc:
        assert "CUDA" in str(exc) and "fp16.onnx" in str(exc)
        return
    assert fp16.bundle.precision_of("image") == "fp16" and "expect no speed-up" in caplog.text
    fp32 = rsclip_geo.load_model(tiny_bundle, device="cpu")
    images = [_solid(c) for c in (RED, GREEN, BLUE)] + [np.random.default_rng(0).integers(0, 256, (30, 30, 3),
                                                                                          dtype=np.uint8)]
    a, b = fp16.encode_images(images), fp32.encode_images(images)
    assert (a * b).sum(1).min() > 0.999
    texts = ["red", "green blue", "a red and green field", ""]
    a, b = fp16.encode_text(texts, normalize=False), fp32.encode_text(texts, normalize=False)
    np.testing.assert_allclose(a, b, atol=1e-3)


def _unrunnable_fp16_image_encoder(path, how):
    """A float16 image graph the CPU provider cannot run: an op it has no kernel for (fails at load), or a
    reshape that fails on the first batch (fails at run)."""
    import onnx
    from onnx import TensorProto, helper

    if how == "load":
        nodes = [helper.make_node("Cast", ["image"], ["half"], to=TensorProto.FLOAT16),
                 helper.make_node("GpuOnlyPool", ["half"], ["pooled"], domain="test.cuda_only"),
                 helper.make_node("Cast", ["pooled"], ["embedding"], to=TensorProto.FLOAT)]
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("test.cuda_only", 1)]
        inits = []
    else:
        nodes = [helper.make_node("Cast", ["image"], ["half"], to=TensorProto.FLOAT16),
                 helper.make_node("Reshape", ["half", "shape"], ["rows"]),
                 helper.make_node("ReduceMean", ["rows"], ["pooled"], axes=[1], keepdims=0),
                 helper.make_node("Cast", ["pooled"], ["embedding"], to=TensorProto.FLOAT)]
        opsets = [helper.make_opsetid("", 17)]
        inits = [onnx.numpy_helper.from_array(np.array([-1, 7, 3], np.int64), "shape")]  # 3*16*16 % 21 != 0
    graph = helper.make_graph(
        nodes, "fp16_cpu_refused",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)


@pytest.mark.parametrize("how", ["load", "run"])
def test_fp16_encoder_the_cpu_provider_cannot_run_is_refused_clearly(tiny_bundle, tmp_path, how):
    import shutil

    from rsclip_geo.errors import BundleError

    dst = tmp_path / "fp16"
    shutil.copytree(tiny_bundle, dst)
    _unrunnable_fp16_image_encoder(dst / "image_encoder.fp16.onnx", how)
    _edit_model_json(dst, image_encoder="image_encoder.fp16.onnx", precision={"image": "fp16", "text": "fp32"})
    with pytest.raises(DeviceError) as err:
        rsclip_geo.load_model(dst, device="cpu")
    message = str(err.value)
    assert "image_encoder.fp16.onnx" in message and "CPUExecutionProvider" in message and "'cuda'" in message
    if how == "load":  # the same graph declared fp32 is simply a broken bundle
        shutil.copy(dst / "image_encoder.fp16.onnx", dst / "image_encoder.onnx")
        _edit_model_json(dst, image_encoder="image_encoder.onnx", precision={"image": "fp32", "text": "fp32"})
        with pytest.raises(BundleError, match="cannot load ONNX model"):
            rsclip_geo.load_model(dst, device="cpu")


def test_float16_graph_inputs_break_the_bundle_contract(tiny_bundle, tmp_path):
    """An fp16 conversion without keep_io_types takes float16 images: named at load, not at the first batch."""
    import shutil

    float16 = pytest.importorskip("onnxconverter_common.float16")
    import onnx

    from rsclip_geo.errors import BundleError

    dst = tmp_path / "fp16io"
    shutil.copytree(tiny_bundle, dst)
    model = float16.convert_float_to_float16(onnx.load(str(dst / "image_encoder.onnx")), keep_io_types=False)
    onnx.save(model, str(dst / "image_encoder.onnx"))
    with pytest.raises(BundleError, match=r"input 'image' is tensor\(float16\)"):
        rsclip_geo.load_model(dst, device="cpu")


# ---- rotation ensemble ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def upright_bundle(tmp_path_factory):
    """A tiny model that sees only the top half of an image, so a quarter turn changes its embedding."""
    from tests.utils.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("upright"), size=16, top_half=True)


def _red_over_blue(size=16):
    img = np.zeros((size, size, 3), np.uint8)
    img[: size // 2] = RED
    img[size // 2:] = BLUE
    return img


@pytest.mark.parametrize("n", [2, 4])
def test_rotations_average_the_first_quarter_turns(upright_bundle, n):
    plain = rsclip_geo.load_model(upright_bundle, device="cpu", batch_size=3)
    turned = rsclip_geo.load_model(upright_bundle, device="cpu", batch_size=3, rotations=n)
    rng = np.random.default_rng(0)
    images = [_red_over_blue()] + [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    got = turned.encode_images(images)
    # by definition: the mean of the normalised embeddings of each image turned k = 0..n-1 quarter turns (numpy's
    # rot90, counter-clockwise, on the HxW axes), renormalised
    each = np.stack([plain.encode_images([np.rot90(im, k) for im in images]) for k in range(n)])
    want = each.mean(axis=0)
    np.testing.assert_allclose(got, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)
    # a preprocessed float batch takes the same path as uint8 images
    np.testing.assert_allclose(turned.encode_images(turned.preprocess(images)), got, atol=1e-6)
    # by hand for a normalised batch of red (+1, -1, -1) over blue (-1, -1, +1): the top half is red (turn 0), blue
    # (turn 2), half of each (turns 1, 3)
    batch = np.empty((1, 3, 16, 16), np.float32)
    batch[0, :, :8] = np.array([1, -1, -1], np.float32)[:, None, None]
    batch[0, :, 8:] = np.array([-1, -1, 1], np.float32)[:, None, None]
    red, half = np.array([1, -1, -1]) / np.sqrt(3), np.array([0.0, -1.0, 0.0])
    want = {2: (red + half) / np.linalg.norm(red + half), 4: half}[n]  # turn 2 (blue) cancels turn 0's red
    np.testing.assert_allclose(turned.encode_images(batch)[0], want, atol=1e-6)
    np.testing.assert_allclose(plain.encode_images(batch)[0], np.array([1, -1, -1]) / np.sqrt(3), atol=1e-6)


def test_rotations_other_than_1_or_4_are_refused(upright_bundle):
    for bad in (0, 3, 8, "4", True):
        with pytest.raises(ValueError, match=r"rotations must be one of 1, 2, 4 .*got " + repr(bad).replace("'", ".")):
            rsclip_geo.load_model(upright_bundle, device="cpu", rotations=bad)


def test_rotations_are_part_of_the_embedding_fingerprint(upright_bundle):
    plain = rsclip_geo.load_model(upright_bundle, device="cpu")
    turned = rsclip_geo.load_model(upright_bundle, device="cpu", rotations=4)
    assert plain.fingerprint == plain.weights_fingerprint == turned.weights_fingerprint  # old indexes stay valid
    assert turned.fingerprint == plain.fingerprint + "+rot4"
    assert rsclip_geo.load_model(upright_bundle, device="cpu", rotations=2).fingerprint == plain.fingerprint + "+rot2"
    assert "rotations=4" in repr(turned) and "rotations" not in repr(plain)
