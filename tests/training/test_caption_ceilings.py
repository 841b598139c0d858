"""Recall ceilings and chance levels of caption sets, checked against the runtime's own metric."""

import itertools

import numpy as np
import pytest

from rsclip_geo.evaluation.retrieval import first_rank, retrieval_metrics
from training.caption_sets.ceilings import chance_recall, recall_ceilings


def exact_tie_embeddings(captions):
    """One-hot text embedding per distinct string (copies tie exactly), flat caption owner list."""
    strings = sorted({c for caps in captions for c in caps})
    text = np.array([np.eye(len(strings))[strings.index(c)] for caps in captions for c in caps])
    owner = np.array([i for i, caps in enumerate(captions) for _ in caps])
    return strings, text, owner


def test_class_caption_set_hand_values():
    # class A: 4 images, class B: 2 images; each image has its class's two captions
    caps = [("a1", "a2")] * 4 + [("b1", "b2")] * 2
    c = recall_ceilings(caps, ks=(1, 2, 5))
    # t2i: each string ranks all its owners the same way, so only 1 (2) of its copies hit at R@1 (R@2)
    assert c["t2i_R@1"] == pytest.approx(4 / 12) and c["t2i_R@2"] == pytest.approx(8 / 12)
    assert c["t2i_R@5"] == 1.0
    # i2t: copies tie and the lowest index wins, so at R@1 only the first image of each class can hit
    assert c["i2t_R@1"] == pytest.approx(2 / 6) and c["i2t_R@2"] == pytest.approx(4 / 6)
    assert c["i2t_R@5"] == 1.0
    assert (c["n_images"], c["n_captions"], c["distinct_captions"], c["shared_captions"]) == (6, 12, 4, 4)
    # an image owning two copies of a string: the ranking can put it first and win both copies
    assert recall_ceilings([("a", "a"), ("a",)], ks=(1,))["t2i_R@1"] == pytest.approx(2 / 3)
    unique = recall_ceilings([("x",), ("y", "z"), ("w",)])
    assert all(unique[f"{d}_R@{k}"] == 1.0 for d in ("i2t", "t2i") for k in (1, 5, 10))


def test_i2t_ceiling_is_what_an_oracle_reaches_under_the_runtime_tie_rule():
    rng = np.random.default_rng(0)
    pool = ["s0", "s1", "s2", "s3", "s4"]
    for _ in range(20):
        caps = [tuple(rng.choice(pool, size=rng.integers(1, 4))) for _ in range(7)]
        strings, text, owner = exact_tie_embeddings(caps)
        for k in (1, 2, 3):
            hits = []
            for i, own in enumerate(caps):  # oracle: image i looks exactly like one of its strings
                best = False
                for s in set(own):
                    image = np.eye(len(strings))[strings.index(s)][None, :]
                    rank = first_rank(image @ text.T, [np.flatnonzero(owner == i)])[0]  # the runtime's ranking
                    best |= bool(rank < k)
                hits.append(best)
            assert recall_ceilings(caps, ks=(k,))[f"i2t_R@{k}"] == pytest.approx(np.mean(hits)), (caps, k)


def test_no_model_beats_the_ceilings_when_copies_tie():
    rng = np.random.default_rng(1)
    caps = [("p", "q"), ("p", "r"), ("p", "q"), ("s",), ("r", "s", "t"), ("q",)]
    strings, text, owner = exact_tie_embeddings(caps)
    ceil = recall_ceilings(caps, ks=(1, 2))
    best = {key: 0.0 for key in ceil if "@" in key}
    for _ in range(300):
        images = rng.normal(size=(len(caps), len(strings)))
        m = retrieval_metrics(images, text, owner, ks=(1, 2))
        for key in best:
            best[key] = max(best[key], m[key])
    for key, value in best.items():
        assert value <= ceil[key] + 1e-12, key
    # ... and a model reaches the text->image bound: image 0 looks like p and q, image 4 like r and t, 3 like s
    onehot = {name: np.eye(len(strings))[strings.index(name)] for name in strings}
    images = np.zeros((len(caps), len(strings)))
    images[0], images[4], images[3] = onehot["p"] + onehot["q"], onehot["r"] + onehot["t"], onehot["s"]
    assert retrieval_metrics(images, text, owner, ks=(1,))["t2i_R@1"] == pytest.approx(ceil["t2i_R@1"]) == 5 / 11


def test_chance_levels_match_random_rankings():
    caps = [("a", "b", "c")] + [(f"x{i}",) for i in range(9)]  # 10 images, 12 captions
    chance = chance_recall(caps, ks=(1, 3))
    # exact by enumeration: i2t of the 3-caption image at k=1 is 3/12, of the others 1/12
    assert chance["i2t_R@1"] == pytest.approx((3 / 12 + 9 / 12) / 10)
    assert chance["t2i_R@3"] == pytest.approx(3 / 10)
    owner = np.array([i for i, c in enumerate(caps) for _ in c])
    rng = np.random.default_rng(2)
    runs = [retrieval_metrics(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)), owner, ks=(1, 3))
            for _ in range(3000)]
    for key in chance:
        assert np.mean([r[key] for r in runs]) == pytest.approx(chance[key], abs=0.02), key
    assert list(itertools.islice(chance, 2)) == ["i2t_R@1", "i2t_R@3"]
