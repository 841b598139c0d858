"""The shipped default bundle: loads without torch, parity as exported, accuracy as its model card says."""

import json
from pathlib import Path

import numpy as np
import pytest

import rsclip_geo
from rsclip_geo.paths import DEFAULT_MODEL_DIR

UNSEEN = ("Airport", "Beach", "Bridge", "Desert", "Pond", "Stadium")
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").is_file(), reason="default model not built")


def seeded_sample(aid: Path, per_class: int = 10, seed: int = 0) -> list[tuple[Path, int]]:
    """10 images per unseen class, drawn by a seeded generator from the sorted file list (not chosen by hand)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, cls in enumerate(UNSEEN):
        files = sorted((aid / cls).glob("*.jpg"))
        out += [(files[j], i) for j in sorted(rng.choice(len(files), per_class, replace=False))]
    return out


def test_default_bundle_loads_and_has_export_parity():
    model = rsclip_geo.load_model()
    parity = model.bundle.parity
    assert parity["image_cosine_min"] >= 0.9999 and parity["text_cosine_min"] >= 0.9999
    assert model.provider == "CPUExecutionProvider" or model.provider == "CUDAExecutionProvider"
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size <= 50 * 2**20, f"shipped bundle is {size / 2**20:.1f} MB"


def test_unseen_class_sample_matches_model_card(shared_data):
    from PIL import Image

    from rsclip_geo.prompts import humanize_class_name

    model = rsclip_geo.load_model()
    card = json.loads((DEFAULT_MODEL_DIR / "model.json").read_text())["card"]["evaluation"]
    expected = card["zero_shot_unseen_sample60"]["top1"]
    sample = seeded_sample(shared_data / "aid")
    images = [np.asarray(Image.open(p).convert("RGB")) for p, _ in sample]
    truth = np.array([y for _, y in sample])
    probs = model.probabilities(model.encode_images(images),
                                model.class_embeddings([humanize_class_name(c) for c in UNSEEN]))
    accuracy = float((probs.argmax(axis=1) == truth).mean())
    assert abs(accuracy - expected) <= 0.05, (accuracy, expected)
    assert accuracy > 1 / 6 + 0.2  # far above chance in any case
