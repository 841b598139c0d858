"""View ensembles measured on a tiny striped scene set with the shipped default bundle: the averages are the
runtime's own (``--rotations 4``), crops are cut before resizing, and the figures are what evaluate_zero_shot says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsclip_geo.evaluation.datasets import ImageFolderDataset
from rsclip_geo.evaluation.zero_shot import evaluate_zero_shot
from rsclip_geo.runtime.encoder import load_model
from training.rotation_distill import centre_crop
from training.view_ensembles import ensemble_embedding, ensembles, measure, view_embeddings

DEFAULT = Path(__file__).resolve().parents[2] / "rsclip_geo" / "models" / "default"


def _scenes(root: Path) -> ImageFolderDataset:
    """Fields (stripes across) and roads (stripes along), 4 each, 120 x 90 px: not square, so crops matter."""
    from PIL import Image

    rng = np.random.default_rng(1)
    paths, labels = [], []
    for c, (name, axis) in enumerate((("fields", 0), ("roads", 1))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            yy, xx = np.mgrid[0:90, 0:120]
            stripes = ((yy if axis == 0 else xx) // (5 + i) % 2 * 160 + 40).astype(np.uint8)
            rgb = np.clip(np.stack([stripes, stripes // 2 + 60, 255 - stripes], -1)
                          + rng.integers(0, 25, (90, 120, 3)), 0, 255).astype(np.uint8)
            paths.append(root / name / f"{name}_{i}.png")
            Image.fromarray(rgb).save(paths[-1])
            labels.append(c)
    return ImageFolderDataset(root, ["fields", "roads"], paths, np.asarray(labels))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return _scenes(tmp_path_factory.mktemp("scenes"))


def _images(ds):
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in ds.paths]


def test_turn_averages_are_the_runtimes_own(scenes):
    one, four = load_model(DEFAULT), load_model(DEFAULT, rotations=4)
    images = _images(scenes)
    views = view_embeddings(one, images, crops=[0.5])
    assert len(views) == 4 * 3  # whole, flip, crop0.5 x 4 turns
    assert np.allclose(ensemble_embedding(views, ensembles()["whole, one view"]), one.encode_images(images),
                       atol=1e-5)
    assert np.allclose(ensemble_embedding(views, ensembles()["whole, 4 turns"]), four.encode_images(images),
                       atol=1e-5)
    crops = [centre_crop(im, 0.5) for im in images]
    assert crops[0].shape == (45, 45, 3)
    assert np.allclose(views[("crop0.5", 0)], one.encode_images(crops), atol=1e-5)  # cut before resizing
    assert np.allclose(views[("flip", 0)], one.encode_images([im[:, ::-1] for im in images]), atol=1e-5)


def test_figures_are_evaluate_zero_shots(scenes):
    one, four = load_model(DEFAULT), load_model(DEFAULT, rotations=4)
    figures = measure(one, scenes, crops=[0.5])
    assert set(figures) == set(ensembles([0.5]))
    assert figures["whole, one view"] == evaluate_zero_shot(one, scenes).top1
    assert figures["whole, 4 turns"] == evaluate_zero_shot(four, scenes).top1
    with pytest.raises(ValueError, match="rotations=1"):
        view_embeddings(four, _images(scenes))
