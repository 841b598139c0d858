"""Retrieval, linear probe / k-NN / few-shot and counting: metrics with known answers, tiny real model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rsclip_geo.errors import LabelError
from rsclip_geo.evaluation import (CountPredictor, predict_images, DatasetError, count_metrics, count_prompts, evaluate_counting,
                                   evaluate_probe, evaluate_retrieval, few_shot, fit_linear_probe, knn, linear_probe,
                                   read_captions, read_counts, retrieval_metrics)
from rsclip_geo.runtime.count_prompts import pluralize
from tests.test_eval_zero_shot import make_colour_dataset
from tests.utils.rasters import BLUE, GREEN, RED


def solid(colour, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), colour, np.uint8)


def tiny_embedding(colour) -> np.ndarray:
    """What the tiny bundle computes for a solid image: the normalised (x/255 - 0.5) / 0.5 colour."""
    v = np.asarray(colour, np.float64) / 127.5 - 1.0
    return v / np.linalg.norm(v)


# ---- retrieval -----------------------------------------------------------------------------
def test_retrieval_metrics_known_ranks():
    # similarity image x caption, built directly: image_emb = I, text_emb = sim.T
    sim = np.array([[0.1, 0.5, 0.9, 0.2, 0.3],    # image 0 owns captions 0, 1 -> best owned at rank 2
                    [0.2, 0.1, 0.8, 0.3, 0.4],    # image 1 owns caption 2 -> rank 1
                    [0.9, 0.8, 0.1, 0.2, 0.3]])   # image 2 owns captions 3, 4 -> rank 3
    owner = [0, 0, 1, 2, 2]
    m = retrieval_metrics(np.eye(3), sim.T, owner, ks=(1, 2, 3))
    assert m["i2t_R@1"] == pytest.approx(1 / 3)
    assert m["i2t_R@2"] == pytest.approx(2 / 3)
    assert m["i2t_R@3"] == 1.0
    # caption ranks of their own image: c0 3, c1 2, c2 2, c3 3 (tie .2/.2 broken by index), c4 3
    assert m["t2i_R@1"] == 0.0
    assert m["t2i_R@2"] == pytest.approx(2 / 5)
    assert m["t2i_R@3"] == 1.0
    assert m["mean_recall"] == pytest.approx(((1 / 3 + 2 / 3 + 1) / 3 + (0 + 0.4 + 1) / 3) / 2)
    with pytest.raises(ValueError, match="no caption"):
        retrieval_metrics(np.eye(3), sim.T[:3], [0, 0, 1])


def test_inverted_softmax_demotes_a_hub_that_tops_every_query():
    from rsclip_geo.evaluation.retrieval import inverted_softmax, score_metrics

    # gallery item 2 is a hub: close to every query, including the bank's; queries 0, 1 belong to items 0, 1
    scores = np.array([[0.50, 0.10, 0.60],
                       [0.10, 0.50, 0.60]])
    bank = np.array([[0.20, 0.10, 0.55], [0.10, 0.20, 0.60], [0.15, 0.15, 0.58]])
    assert (scores.argmax(1) == 2).all()
    fixed = inverted_softmax(scores, bank, beta=20.0)
    assert list(fixed.argmax(1)) == [0, 1]
    # a softmax over the bank per gallery item: with a one-row bank equal to the scores, every item scores 0
    np.testing.assert_allclose(inverted_softmax(scores[:1], scores[:1], 30.0), 0.0, atol=1e-12)
    # stable for large beta (no overflow) and equal to the direct formula where that is finite
    direct = 5.0 * scores - np.log(np.exp(5.0 * bank).sum(0, keepdims=True))
    np.testing.assert_allclose(inverted_softmax(scores, bank, 5.0), direct, rtol=1e-12)
    assert np.isfinite(inverted_softmax(scores * 100, bank * 100, 500.0)).all()
    # as metrics, with a third query that belongs to the hub: 1 of 3 first before, all 3 after
    three = np.vstack([scores, [0.10, 0.10, 0.90]])
    assert score_metrics(three.T, three, [0, 1, 2], ks=(1,))["t2i_R@1"] == pytest.approx(1 / 3)
    assert score_metrics(three.T, inverted_softmax(three, bank, 20.0), [0, 1, 2], ks=(1,))["t2i_R@1"] == 1.0
    with pytest.raises(ValueError, match="bank scores"):
        inverted_softmax(scores, bank[:, :2], 1.0)
    with pytest.raises(ValueError, match="beta"):
        inverted_softmax(scores, bank, 0.0)
    with pytest.raises(ValueError, match="text->image scores"):
        score_metrics(fixed.T, fixed.T, [0, 1])


def test_retrieval_tiny_model_several_captions_rule(tiny_model):
    images = [solid(RED), solid(GREEN), solid(BLUE)]
    # red image: a wrong caption then the right one; blue image only has a misleading caption
    captions = [["blue", "red"], ["green"], ["red green"]]
    m = evaluate_retrieval(tiny_model, images, captions)
    # i2t: red's best caption 'red' is its own (hit via its 2nd caption); green hit; blue's best
    # caption is 'blue', owned by the red image, so the blue image misses at 1
    assert m["i2t_R@1"] == pytest.approx(2 / 3)
    # t2i: 'red' -> red image, 'green' -> green image hit; 'blue' finds the blue image, not its owner;
    # 'red green' scores lowest on the blue image
    assert m["t2i_R@1"] == pytest.approx(2 / 4)
    assert m["i2t_R@5"] == m["t2i_R@5"] == 1.0  # only 3 images / 4 captions
    assert (m["n_images"], m["n_captions"]) == (3, 4)
    # with only the first caption per image, the red image now misses too
    first_only = evaluate_retrieval(tiny_model, images, [c[0] for c in captions])
    assert first_only["i2t_R@1"] == pytest.approx(1 / 3)


def _write_images(folder, named):
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in named.items():
        Image.fromarray(solid(colour, 12)).save(folder / name)


def test_read_captions_karpathy_and_csv(tmp_path):
    _write_images(tmp_path / "imgs", {"r.png": RED, "g.png": GREEN, "b.png": BLUE})
    kj = tmp_path / "dataset_rsicd.json"
    kj.write_text(json.dumps({"images": [
        {"filename": "r.png", "split": "test", "sentences": [{"raw": "red"}, {"raw": "red green"}]},
        {"filename": "g.png", "split": "train", "sentences": [{"raw": "green"}]},
        {"filename": "b.png", "split": "test", "sentences": [{"raw": "blue"}]}]}))
    cs = read_captions(kj, images_root=tmp_path / "imgs", split="test")
    assert [p.name for p in cs.image_paths] == ["r.png", "b.png"]
    assert cs.captions == ["red", "red green", "blue"]
    assert cs.caption_image.tolist() == [0, 0, 1]
    assert len(read_captions(kj, images_root=tmp_path / "imgs", split="all").image_paths) == 3
    csv_file = tmp_path / "imgs" / "caps.csv"
    csv_file.write_text("path,caption\nr.png,red\ng.png,green\nr.png,a red field\n")
    cs = read_captions(csv_file)
    assert cs.captions_of(0) == ["red", "a red field"] and cs.captions_of(1) == ["green"]
    with pytest.raises(DatasetError, match="no captioned images in split 'val'"):
        read_captions(kj, images_root=tmp_path / "imgs", split="val")
    with pytest.raises(DatasetError, match=r"2 image\(s\) not found.*r\.png"):
        read_captions(kj, images_root=tmp_path, split="test")
    bad = tmp_path / "bad.csv"
    bad.write_text("only_a_path.png\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: row 1"):
        read_captions(bad, images_root=tmp_path / "imgs")


# ---- probes -----------------------------------------------------------------------------------
def clusters(n_per_class: int, n_classes: int = 3, dim: int = 8, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_classes]
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + noise * rng.standard_normal((len(labels), dim)), labels


def test_linear_probe_and_knn_separable():
    xtr, ytr = clusters(20, seed=1)
    xte, yte = clusters(15, seed=2)
    lp = linear_probe(xtr, ytr, xte, yte, classes=["a", "b", "c"])
    assert lp.accuracy == 1.0 and lp.per_class == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert lp.l2_scores  # the penalty was chosen on held-out training data
    kn = knn(xtr, ytr, xte, yte, k=5)
    assert kn.accuracy == 1.0 and kn.k == 5


def test_probes_chance_level_on_random_labels():
    rng = np.random.default_rng(3)
    xtr, xte = rng.standard_normal((300, 16)), rng.standard_normal((600, 16))
    ytr, yte = rng.integers(0, 3, 300), rng.integers(0, 3, 600)
    for acc in (linear_probe(xtr, ytr, xte, yte, seed=0).accuracy, knn(xtr, ytr, xte, yte, k=20).accuracy):
        assert 0.2 < acc < 0.47  # chance is 1/3


def test_linear_probe_deterministic():
    xtr, ytr = clusters(10, noise=0.6, seed=4)
    xte, yte = clusters(10, noise=0.6, seed=5)
    a = linear_probe(xtr, ytr, xte, yte, seed=7)
    b = linear_probe(xtr, ytr, xte, yte, seed=7)
    assert a == b
    assert few_shot(xtr, ytr, xte, yte, shots=(2,), draws=3, seed=1)[0].accuracies == \
        few_shot(xtr, ytr, xte, yte, shots=(2,), draws=3, seed=1)[0].accuracies


def test_linear_probe_matches_sklearn_optimum():
    sklearn_linear = pytest.importorskip("sklearn.linear_model")
    xtr, ytr = clusters(30, noise=0.5, seed=6)
    xte, _ = clusters(30, noise=0.5, seed=7)
    l2 = 1e-2
    ours = fit_linear_probe(xtr, ytr, 3, l2=l2, max_iter=5000, tol=1e-10)
    design = ours._design(xtr)[:, :-1]
    # sklearn minimises C * sum(CE) + ||W||^2 / 2  ==  n * C * (mean CE + l2/2 ||W||^2) with C = 1 / (n l2)
    ref = sklearn_linear.LogisticRegression(C=1 / (len(xtr) * l2), tol=1e-8, max_iter=10000).fit(design, ytr)
    np.testing.assert_allclose(ours.predict_proba(xte), ref.predict_proba(ours._design(xte)[:, :-1]), atol=2e-3)


def test_few_shot_shape():
    xtr, ytr = clusters(10, seed=8)
    keep = np.r_[np.flatnonzero(ytr != 2), np.flatnonzero(ytr == 2)[:2]]  # class 2 has only 2 images
    xte, yte = clusters(5, seed=9)
    res = few_shot(xtr[keep], ytr[keep], xte, yte, shots=(1, 4), draws=3, seed=0)
    assert [r.shots for r in res] == [1, 4]
    assert all(len(r.accuracies) == 3 for r in res)
    assert [r.n_train_per_draw for r in res] == [3, 4 + 4 + 2]
    assert res[1].mean == pytest.approx(np.mean(res[1].accuracies))
    assert res[1].mean == 1.0  # separable clusters


def test_evaluate_probe_tiny_model(tiny_model, tmp_path):
    root = make_colour_dataset(tmp_path / "c", per_format=2)  # 6 images per class
    rep = evaluate_probe(tiny_model, root, split=0.5, shots=(1, 2), k=3, draws=2, seed=0)
    assert (rep.n_train, rep.n_test) == (9, 9)
    assert rep.linear.accuracy == 1.0 and rep.knn.accuracy == 1.0
    assert [r.shots for r in rep.few_shot] == [1, 2]
    d = rep.to_dict()
    assert set(d) >= {"linear_probe", "knn", "few_shot", "n_train", "n_test", "model"}
    other = make_colour_dataset(tmp_path / "other", {"red": RED, "green": GREEN, "yellow": (220, 220, 30)})
    with pytest.raises(DatasetError, match=r"only in train: \['yellow'\]"):
        evaluate_probe(tiny_model, root, train_dataset=other)


# ---- counting ------------------------------------------------------------------------------------
def test_count_metrics_known_values():
    m = count_metrics([1, 2, 3, 10], [1, 3, 5, 10])
    assert (m.n, m.exact, m.within1) == (4, 0.5, 0.75)
    assert m.mae == pytest.approx((0 + 1 + 2 + 0) / 4)
    assert m.baseline_count == 2.5  # median true count
    assert m.baseline_mae == pytest.approx((1.5 + 0.5 + 0.5 + 7.5) / 4)


def test_count_prompts_words_digits_both():
    assert pluralize("plane") == "planes" and pluralize("storage tank") == "storage tanks"
    assert pluralize("ship") == "ships" and pluralize("bus") == "bus" and pluralize("ferry") == "ferries"
    words = count_prompts("plane", 3)
    assert words == [("a satellite photo of one plane",), ("a satellite photo of two planes",),
                     ("a satellite photo of three planes",)]
    assert count_prompts("plane", 12, "digits")[11] == ("a satellite photo of 12 planes",)
    assert count_prompts("ship", 2, "both")[1] == ("a satellite photo of two ships", "a satellite photo of 2 ships")
    with pytest.raises(LabelError, match="numerals"):
        count_prompts("ship", 3, "roman")
    with pytest.raises(LabelError, match=r"\{n\}"):
        count_prompts("ship", 3, template="a photo of {objects}")


def test_count_predictor_with_colour_numerals(tiny_model):
    # numbers spelled 'red', 'green', 'blue' make counts 1, 2, 3 match red, green, blue images
    pred = CountPredictor(tiny_model, "thing", max_count=3, numerals=["red", "green", "blue"], template="{n} {objects}")
    assert pred.prompts == [("red thing",), ("green things",), ("blue things",)]
    out = predict_images(pred, [solid(RED), solid(GREEN), solid(BLUE)])
    assert [p.count for p in out] == [1, 2, 3]
    # runner-up: the axis with the larger pixel value among the other two (ties -> smaller count)
    assert [p.runner_up for p in out] == [2, 3, 2]
    e = tiny_embedding(RED)
    expected = np.exp(10 * e) / np.exp(10 * e).sum()  # logit_scale 10, text embeddings = R, G, B axes
    assert out[0].probability == pytest.approx(expected[0], rel=1e-4)
    assert out[0].runner_up_probability == pytest.approx(expected[1], rel=1e-4)


def test_evaluate_counting_and_reader_errors(tiny_model, tmp_path):
    _write_images(tmp_path, {"r.png": RED, "g.png": GREEN, "b.png": BLUE})
    csv_file = tmp_path / "counts.csv"
    csv_file.write_text("image_path,object_name,count\nr.png,thing,1\ng.png,thing,3\nb.png,thing,3\nb.png,thing,7\n")
    res = evaluate_counting(tiny_model, tmp_path, max_count=3, numerals=["red", "green", "blue"],
                            template="{n} {objects}")
    assert [p["count"] for p in res.predictions] == [1, 2, 3, 3]
    m = res.metrics
    assert (m.exact, m.within1, m.mae) == (0.5, 0.75, pytest.approx(1.25))
    assert m.baseline_count == 3 and m.baseline_mae == pytest.approx((2 + 0 + 0 + 4) / 4)
    assert res.topk[1] == 0.5 and res.topk[3] == 0.75  # count 7 is never among 1..3
    bad = tmp_path / "bad.csv"
    bad.write_text("r.png,thing,many\n")
    with pytest.raises(DatasetError, match=r"bad\.csv: line 1: count 'many'"):
        read_counts(bad)
    bad.write_text("missing.png,thing,2\n")
    with pytest.raises(DatasetError, match="missing.png"):
        read_counts(bad)
