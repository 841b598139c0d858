"""model.json validation and broken bundles: every error names the file and the field."""

import json
import shutil

import pytest

import rsclip_geo
from rsclip_geo.runtime.bundle import FORMAT_VERSION, read_bundle
from rsclip_geo.errors import BundleError


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit(folder, fn):
    path = folder / "model.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def test_round_trip(tiny_bundle, tmp_path):
    bundle = read_bundle(tiny_bundle)
    assert bundle.format_version == FORMAT_VERSION
    assert bundle.image.size == 16 and bundle.text.context_length == 8
    bundle.write(tmp_path)
    again = json.loads((tmp_path / "model.json").read_text())
    assert again == json.loads((tiny_bundle / "model.json").read_text())


@pytest.mark.parametrize("missing", ["image_encoder.onnx", "text_encoder.onnx", "bpe_simple_vocab_16e6.txt.gz"])
def test_missing_file_named(bundle_copy, missing):
    (bundle_copy / missing).unlink()
    with pytest.raises(BundleError, match=missing):
        read_bundle(bundle_copy)


def test_missing_model_json(bundle_copy):
    (bundle_copy / "model.json").unlink()
    with pytest.raises(BundleError, match="model.json"):
        read_bundle(bundle_copy)


def test_not_json(bundle_copy):
    (bundle_copy / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_bundle(bundle_copy)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(format_version=99), "format_version"),
    (lambda d: d.pop("embed_dim"), "embed_dim"),
    (lambda d: d["image"].update(size="224"), "image.size"),
    (lambda d: d["image"].update(mean=[0.5, 0.5]), "image.mean"),
    (lambda d: d["image"].update(std=[0.5, 0.0, 0.5]), "image.std"),
    (lambda d: d["image"].update(interpolation="lanczos9"), "image.interpolation"),
    (lambda d: d["text"].update(tokenizer="sentencepiece"), "text.tokenizer"),
    (lambda d: d.update(templates=["no placeholder"]), "templates"),
    (lambda d: d.update(logit_scale=-1), "logit_scale"),
    (lambda d: d.update(precision="fp16"), "precision"),
    (lambda d: d.update(precision={"image": "bf16"}), "precision.image"),
    (lambda d: d.update(precision={"audio": "fp32"}), "precision.audio"),
    (lambda d: d.update(text_encoder="text_encoder.int8.onnx", precision={"text": "fp16"}), "precision.text"),
])
def test_bad_fields_named(bundle_copy, edit, field):
    path = _edit(bundle_copy, edit)
    with pytest.raises(BundleError) as err:
        read_bundle(bundle_copy)
    assert field in str(err.value) and str(path) in str(err.value)


def test_wrong_dims_against_onnx(bundle_copy):
    """model.json promising another input size or embed dim than the ONNX graph is caught at load."""
    _edit(bundle_copy, lambda d: d["image"].update(size=32))
    with pytest.raises(BundleError, match="image.size"):
        rsclip_geo.load_model(bundle_copy, device="cpu")
    _edit(bundle_copy, lambda d: (d["image"].update(size=16), d.update(embed_dim=5)))
    with pytest.raises(BundleError, match="embed_dim"):
        rsclip_geo.load_model(bundle_copy, device="cpu")
    _edit(bundle_copy, lambda d: (d.update(embed_dim=3), d["text"].update(context_length=9)))
    with pytest.raises(BundleError, match="text.context_length"):
        rsclip_geo.load_model(bundle_copy, device="cpu")


def test_corrupt_onnx_named(bundle_copy):
    (bundle_copy / "image_encoder.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(BundleError, match="image_encoder.onnx"):
        rsclip_geo.load_model(bundle_copy, device="cpu")


def test_unknown_model_name():
    with pytest.raises(BundleError, match="models list"):
        rsclip_geo.load_model("no-such-model-anywhere")


def test_dynamic_length_needs_a_dynamic_graph(bundle_copy):
    """The tiny bundle's text graph has a fixed sequence length: claiming otherwise is caught at load."""
    _edit(bundle_copy, lambda d: d["text"].update(dynamic_length=True))
    with pytest.raises(BundleError, match="text.dynamic_length"):
        rsclip_geo.load_model(bundle_copy, device="cpu")


def test_precision_declared_or_read_from_file_names(bundle_copy, tmp_path):
    """Bundles written before the 'precision' field keep their model.json (and fingerprint) as they were."""
    from rsclip_geo.runtime.bundle import bundle_fingerprint

    bundle = read_bundle(bundle_copy)
    assert bundle.precision == {} and "precision" not in bundle.to_dict()
    assert (bundle.precision_of("image"), bundle.precision_of("text")) == ("fp32", "fp32")
    before = bundle_fingerprint(bundle)
    (bundle_copy / "text_encoder.onnx").rename(bundle_copy / "text_encoder.int8.onnx")
    _edit(bundle_copy, lambda d: d.update(text_encoder="text_encoder.int8.onnx"))
    assert read_bundle(bundle_copy).precision_of("text") == "int8"
    _edit(bundle_copy, lambda d: d.update(precision={"image": "fp16", "text": "int8"}))
    bundle = read_bundle(bundle_copy)
    assert bundle.precision_of("image") == "fp16" and bundle.to_dict()["precision"] == {"image": "fp16",
                                                                                          "text": "int8"}
    assert bundle_fingerprint(bundle) != before
    bundle.write(tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["precision"]["text"] == "int8"
    with pytest.raises(ValueError, match="encoder"):
        bundle.precision_of("audio")
