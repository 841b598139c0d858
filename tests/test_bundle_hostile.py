"""Crafted model.json files and a broken encoder (issue 15, defect 8): each gives a BundleError naming the file
and the field, before anything runs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rsclip_geo
from rsclip_geo.runtime.bundle import read_bundle
from rsclip_geo.errors import BundleError

VOCAB = "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def _edit(folder, fn):
    path = folder / "model.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))  # writes NaN / Infinity as Python's json (and many others) do
    return path


@pytest.mark.parametrize("edit, field, says", [
    (lambda d: d.update(logit_scale=float("inf")), "logit_scale", "finite"),
    (lambda d: d.update(logit_scale=float("nan")), "logit_scale", "finite"),
    (lambda d: d["image"].update(std=[0.5, float("nan"), 0.5]), "image.std", "finite"),
    (lambda d: d["image"].update(mean=[0.5, float("inf"), 0.5]), "image.mean", "finite"),
    (lambda d: d["image"].update(mean=[True, 0.5, 0.5]), "image.mean", "finite numbers"),
    (lambda d: d["image"].update(size=10**6), "image.size", "8..4096"),  # terabytes a tile
    (lambda d: d.update(embed_dim=10**9), "embed_dim", "1..65536"),
    (lambda d: d["text"].update(context_length=10**9), "text.context_length", "2..4096"),
    (lambda d: d["text"].update(context_length=1), "text.context_length", "2..4096"),
    (lambda d: d["text"].update(dynamic_length="false"), "text.dynamic_length", "true or false"),
    (lambda d: d["text"].update(dynamic_length=0), "text.dynamic_length", "true or false"),
    (lambda d: d["text"].update(pad_id="x"), "text.pad_id", "integer"),
    (lambda d: d["text"].update(pad_id=-1), "text.pad_id", ">= 0"),
    (lambda d: d["text"].update(tokenizer_file=7), "text.tokenizer_file", "string"),
    (lambda d: d.update(image="big"), "image", "object"),
    (lambda d: d.update(source=["a", "b"]), "source", "object"),
    (lambda d: d.update(parity="good"), "parity", "object"),
    (lambda d: d.update(card=3), "card", "object"),
    (lambda d: d.update(license=["MIT"]), "license", "string"),
    (lambda d: d.update(image_encoder=None), "image_encoder", "string"),
    (lambda d: d["image"].update(interpolation=["bicubic"]), "image.interpolation", "string"),
    (lambda d: d["text"].update(tokenizer_file="../../../../etc/passwd"), "text.tokenizer_file", "inside"),
    (lambda d: d["text"].update(tokenizer_file="/etc/passwd"), "text.tokenizer_file", "inside"),
    (lambda d: d.update(image_encoder="../other/image_encoder.onnx"), "image_encoder", "inside"),
    (lambda d: d.update(text_encoder="sub/../../text_encoder.onnx"), "text_encoder", "inside"),
])
def test_hostile_fields_named(bundle_copy, edit, field, says):
    path = _edit(bundle_copy, edit)
    with pytest.raises(BundleError) as err:
        read_bundle(bundle_copy)
    msg = str(err.value)
    assert f"'{field}'" in msg and str(path) in msg and says in msg, msg


def test_symlink_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "outside.txt.gz"
    shutil.move(bundle_copy / VOCAB, outside)
    os.symlink(outside, bundle_copy / VOCAB)
    with pytest.raises(BundleError, match=r"outside the bundle folder.*text\.tokenizer_file"):
        read_bundle(bundle_copy)
    os.unlink(bundle_copy / VOCAB)
    (bundle_copy / "sub").mkdir()
    shutil.move(outside, bundle_copy / "sub" / VOCAB)
    os.symlink(bundle_copy / "sub" / VOCAB, bundle_copy / VOCAB)  # a link inside the folder is fine
    assert read_bundle(bundle_copy).tokenizer_path == bundle_copy / VOCAB


def test_valid_edits_still_read(bundle_copy):
    _edit(bundle_copy, lambda d: d["text"].update(dynamic_length=False, pad_id=0, context_length=8))
    b = read_bundle(bundle_copy)
    assert b.text.dynamic_length is False and b.text.pad_id == 0


def _nan_image_encoder(path, size: int) -> None:
    proj = np.full((3, 3), np.nan, np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["pooled", "proj"], ["embedding"])],
        "nan_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(proj, "proj")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_encoder_returning_nan_is_an_error_not_unknown_labels(bundle_copy, tmp_path):
    from tests.utils.rasters import RED, colour_blocks, write_geotiff

    _nan_image_encoder(bundle_copy / "image_encoder.onnx", 16)
    model = rsclip_geo.load_model(bundle_copy, device="cpu")
    scene = write_geotiff(tmp_path / "s.tif", colour_blocks([[RED, RED]], 16))
    with pytest.raises(BundleError, match=r"image_encoder\.onnx: the encoder returned NaN or infinite embeddings"):
        rsclip_geo.tile_classify(scene, ["red", "green"], model=model, min_score=0.5)
    with pytest.raises(BundleError, match="NaN or infinite"):
        model.encode_images([np.zeros((16, 16, 3), np.uint8)])
