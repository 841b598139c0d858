"""Grouped retrieval (training.caption_sets.grouped) with the tiny colour bundle on a hand-made set."""

import numpy as np
import pytest
from PIL import Image

from rsclip_geo.evaluation.datasets import read_captions
from rsclip_geo.evaluation.retrieval import evaluate_retrieval
from training.caption_sets.grouped import grouped_retrieval
from training.caption_sets.writer import Item, write_karpathy

RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture()
def colour_groups(tmp_path):
    """g00: each colour image captioned with its colour; g01: the green and blue captions swapped.
    The red image has a second caption, so captions and images do not line up one to one."""
    (tmp_path / "images").mkdir()
    items = []
    for g, captions in enumerate([{"red": "red", "green": "green", "blue": "blue"},
                                  {"red": "red", "green": "blue", "blue": "green"}]):
        for colour in RGB:
            name = f"g{g}_{colour}.png"
            Image.fromarray(np.full((8, 8, 3), RGB[colour], np.uint8)).save(tmp_path / "images" / name)
            texts = (f"a {captions[colour]} image",) + (("red",) if colour == "red" else ())
            items.append(Item("images", name, texts, split=f"g{g:02d}",
                              extra={"part": "unseen" if colour == "blue" else "seen"}))
    return write_karpathy(tmp_path / "groups.json", items, "colours")


def test_groups_known_ranks_and_breakdown(colour_groups, tiny_model):
    r = grouped_retrieval(tiny_model, colour_groups)
    assert (r["groups"], r["images_per_group"], r["images"], r["captions"]) == (2, 3, 6, 8)
    g0, g1 = r["per_group"]["g00"], r["per_group"]["g01"]
    assert g0["i2t_R@1"] == g0["t2i_R@1"] == 1.0
    assert g1["i2t_R@1"] == pytest.approx(1 / 3) and g1["t2i_R@1"] == pytest.approx(2 / 4)  # only red right
    assert r["summary"]["i2t_R@1"]["mean"] == pytest.approx(2 / 3)
    assert r["summary"]["t2i_R@1"]["min"] == pytest.approx(1 / 2) and r["summary"]["t2i_R@1"]["max"] == 1.0
    # each group's figures are exactly what the CLI's path gives for that split
    for g in ("g00", "g01"):
        direct = evaluate_retrieval(tiny_model, read_captions(colour_groups, split=g))
        assert {k: direct[k] for k in r["per_group"][g]} == r["per_group"][g]
    seen, unseen = r["by_flag"]["seen"], r["by_flag"]["unseen"]
    assert (seen["images"], seen["captions"], unseen["images"], unseen["captions"]) == (4, 6, 2, 2)
    # blue image: right in g00, wrong in g01; red right twice (both captions), green right once
    assert unseen["i2t_R@1"] == 0.5 and unseen["t2i_R@1"] == 0.5
    assert seen["i2t_R@1"] == 0.75 and seen["t2i_R@1"] == pytest.approx(5 / 6)
    assert unseen["i2t_R@5"] == seen["t2i_R@10"] == 1.0  # three images: everything within 5
