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
    from rsclip_geo.prompts import Label

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
