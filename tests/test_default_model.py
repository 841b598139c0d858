"""The shipped default bundle: loads without torch, parity as exported, accuracy as its model card says."""

import json

import numpy as np
import pytest

import rsclip_geo
from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").is_file(), reason="default model not built")


def test_default_bundle_loads_and_has_export_parity():
    model = rsclip_geo.load_model()
    parity = model.bundle.parity
    assert parity["image_cosine_min"] >= 0.9999 and parity["text_cosine_min"] >= 0.9999
    assert model.provider == "CPUExecutionProvider" or model.provider == "CUDAExecutionProvider"
    dense = model.bundle.dense
    assert dense is not None and (DEFAULT_MODEL_DIR / dense.file).is_file()  # the default has a dense head
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()}
    total = sum(files.values())
    # the whole bundle, dense head included, within the 50 MB budget (decimal MB, a little stricter than MiB):
    # the dense head (a second copy of the conv trunk) stores its weights as float16 and computes in fp32
    assert total <= 50 * 10**6, f"shipped bundle is {total / 1e6:.1f} MB: " + ", ".join(
        f"{k} {v / 1e6:.1f}" for k, v in sorted(files.items()))
    # both copies of the conv trunk (image encoder and dense head) store float16 weights and compute in fp32
    assert dense.weights == "fp16-stored" and model.bundle.image_weights == "fp16-stored"
    storage = parity["image_weight_storage"]
    assert storage["cosine_min"] >= 0.9999 and storage["weight_storage"]["bytes_after"] == files[
        model.bundle.image_encoder] < 0.55 * storage["weight_storage"]["bytes_before"]
    # the dense head's cells against torch (measured on the float16-stored file at export); its projection was
    # trained for region alignment (training/dense_align.py), so the mean of its cells stays near, not at, the
    # image embedding. Held to the bar of float16-stored weights (rounded weights vs the fp32 torch model).
    from rsclip_geo.export.weight_storage import FP16_STORED_MIN_COSINE

    assert dense.parity["cosine_min"] >= dense.parity["min_cosine_required"] == FP16_STORED_MIN_COSINE
    assert dense.parity["projection"].startswith("trained") and len(dense.parity["projection_file_sha256"]) == 64
    assert 0.95 <= dense.parity["pooled_vs_image_cosine_min"] < 0.999
    assert dense.threshold is not None and 0.0 < dense.threshold < 1.0  # calibrated for `segment --threshold auto`


def test_aid30_sample_matches_model_card(shared_data):
    """2 held-out images per AID class (a seeded draw, not chosen by hand), 30-way, through the runtime."""
    from training.model_report import aid30, sample60_top1

    model = rsclip_geo.load_model()
    card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["card"]["evaluation"]
    expected = card["aid30_val_sample60"]["top1"]
    val, _ = aid30(shared_data / "aid")
    measured = sample60_top1(model, val)
    assert measured["n"] == 60
    assert abs(measured["top1"] - expected) <= 0.02, (measured, expected)
    assert measured["top1"] > 1 / 30 + 0.5  # far above chance in any case
    # the rotation ensemble on the same draw: the card measured it at least as good on AID-30 (v2.7 0.955 -> 0.956;
    # v2.4 0.931 -> 0.949); a wrong turn (other axes, unnormalised views) would fall far below the plain run
    turned = sample60_top1(rsclip_geo.load_model(rotations=4), val)
    assert turned["top1"] >= measured["top1"] - 1 / 60, (turned, measured)


def test_int8_text_embeddings_do_not_depend_on_batch_mates():
    """The shipped int8 text encoder scales activations per batch; the runtime runs each text (and each label's
    prompt set) alone, so a query or label embeds the same whatever else is encoded with it."""
    model = rsclip_geo.load_model(batch_size=32)
    assert model.text_runs_alone
    texts = ["water", "a harbour with many boats", "dense residential area", "bare land", "baseball field"]
    alone = np.stack([model.encode_text([t])[0] for t in texts])
    np.testing.assert_array_equal(model.encode_text(texts), alone)
    # what a plain batched run gives: different, which is why the runtime does not do it
    batched = model._text.run(None, {"input_ids": model._trim(model.tokenizer(texts))})[0]
    batched /= np.linalg.norm(batched, axis=1, keepdims=True)
    assert not np.allclose(batched, alone, atol=1e-4)
    few = model.class_embeddings(["water", "forest"])
    many = model.class_embeddings(["farmland", "water", "bare land", "forest", "storage tanks"])
    np.testing.assert_array_equal(few[0], many[1])
    np.testing.assert_array_equal(few[1], many[3])
