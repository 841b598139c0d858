"""The aid-heldout caption-set builder on a few real AID classes, and its captions against training's."""

import json
from pathlib import Path

import numpy as np
import pytest

from rsclip_geo.evaluation.datasets import read_captions
from training.caption_sets.__main__ import build_set
from training.caption_sets.aid_heldout import (HELDOUT_TEMPLATES, SEEN_CLASSES, group_order, heldout_captions,
                                               training_captions, training_overlap)
from training.data.aid import UNSEEN_CLASSES, load_split
from training.data.aid_captions import TRAIN_TEMPLATES, check_no_unseen_words
from training.data.readers import read_karpathy_json

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CLASSES = ("BaseballField", "Forest", "Stadium")  # 44 + 50 held-out seen images, 290 unseen


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (DATA / "aid" / "Forest").is_dir():
        pytest.skip(f"shared AID data missing at {DATA}")
    out = tmp_path_factory.mktemp("sets") / "aid"
    info = build_set("aid-heldout", out, DATA, seed=0, subset=list(CLASSES))
    return out, info


def test_only_held_out_images_with_their_class_captions(built):
    out, info = built
    split = load_split()
    seen, unseen = (json.loads((out / f).read_text())["images"] for f in ("seen.json", "unseen.json"))
    assert sorted((im["class"], im["filename"]) for im in seen) == sorted(
        (c, f) for c in ("BaseballField", "Forest") for f in split["val"][c])
    assert sorted(im["filename"] for im in unseen) == sorted(split["unseen"]["Stadium"])
    trained = {(c, f) for c, files in split["train"].items() for f in files}
    assert not trained & {(im["class"], im["filename"]) for im in seen + unseen}  # nothing the model trained on
    for im in seen + unseen:
        assert [s["raw"] for s in im["sentences"]] == list(heldout_captions(im["class"]))
        assert im["part"] == ("unseen" if im["class"] in UNSEEN_CLASSES else "seen")
        assert (out / im["filepath"] / im["filename"]).read_bytes() == \
            (DATA / "aid" / im["class"] / im["filename"]).read_bytes()  # copied unchanged
    # the runtime reader (default split 'test') and the training reader both read the sets back
    cs = read_captions(out / "seen.json")
    assert len(cs.image_paths) == 94 and len(cs.captions) == 5 * 94
    assert len(list(read_karpathy_json(out / "unseen.json"))) == 290
    assert info["files"]["seen.json"]["recall_ceilings"]["t2i_R@1"] == pytest.approx(2 / 94)  # 2 classes
    assert info["files"]["unseen.json"]["recall_ceilings"]["i2t_R@10"] == pytest.approx(10 / 290)
    assert info["training_overlap"]["exact_or_template_matches"] == []


def test_groups_hold_one_image_per_class_and_no_shared_caption(built):
    out, info = built
    images = json.loads((out / "groups.json").read_text())["images"]
    assert info["groups"]["n"] == 44  # BaseballField has 44 held-out images
    by_group = {}
    for im in images:
        by_group.setdefault(im["split"], []).append(im)
    assert sorted(by_group) == [f"g{g:02d}" for g in range(44)]
    for name, group in by_group.items():
        assert sorted(im["class"] for im in group) == sorted(CLASSES)
        assert all(im["group"] == int(name[1:]) for im in group)
        texts = [s["raw"] for im in group for s in im["sentences"]]
        assert len(texts) == len(set(texts)) == 15
    assert info["files"]["groups.json"]["recall_ceilings_min_over_splits"]["t2i_R@1"] == 1.0
    assert len({im["filename"] for im in images}) == 3 * 44  # no image twice
    one = read_captions(out / "groups.json", split="g07")
    assert len(one.image_paths) == 3
    # group numbers come from a seeded order of the file names, not from the listing order
    files = load_split()["val"]["Forest"]
    assert group_order(files, "Forest", 0) == group_order(list(reversed(files)), "Forest", 0)
    assert group_order(files, "Forest", 0) != group_order(files, "Forest", 1)
    assert sorted(group_order(files, "Forest", 0).values()) == list(range(len(files)))


def test_heldout_captions_are_not_training_captions():
    all_classes = list(SEEN_CLASSES) + list(UNSEEN_CLASSES)
    caps = [c for name in all_classes for c in heldout_captions(name)]
    assert len(caps) == 5 * 30 and len(set(caps)) == len(caps)
    assert training_overlap(caps) == []
    norm = {t.lower().rstrip(".") for t in TRAIN_TEMPLATES}
    assert not norm & {t.lower().rstrip(".") for t in HELDOUT_TEMPLATES}
    # the check does catch training sentences: a sampled caption, a description, a template with a new name
    train = training_captions()
    assert "an aerial image showing a forest" in train and "a dense green tree canopy covering the whole image" in train
    assert training_overlap(["An aerial image showing a forest.", "A dense green tree canopy covering the whole image.",
                             "A satellite photo of a pond.", "An orthophoto of a pond."]) == \
        ["An aerial image showing a forest.", "A dense green tree canopy covering the whole image.",
         "A satellite photo of a pond."]
    check_no_unseen_words([c for name in SEEN_CLASSES for c in heldout_captions(name)])  # seen captions stay clean
    assert heldout_captions("Pond")[0] == "This aerial photograph shows a pond."
    assert heldout_captions("BareLand")[1] == "Bare land seen from high above."
    assert np.all([name.lower()[:4] in " ".join(heldout_captions(name)).lower().replace(" ", "")
                   for name in all_classes])  # every caption set names its class
