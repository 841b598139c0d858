"""Image-text retrieval recall, as RemoteCLIP reports it on RSICD / RSITMD / UCM.

An image has several captions. Image->text: a hit at k when ANY of the image's
captions ranks in the top k. Text->image: a hit when the caption's own image
ranks in the top k. Mean recall is the mean of the six R@{1,5,10} numbers.
Ranking sorts by cosine similarity, ties broken by index (deterministic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .datasets import CaptionSet
from .embed import ProgressCallback, embed_images

DEFAULT_KS = (1, 5, 10)


def first_rank(scores: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """For each row, the 0-based rank of the best-placed target column (stable descending order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    position = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    position[rows, order] = np.arange(order.shape[1])[None, :]
    return np.array([position[i, t].min() for i, t in enumerate(targets)], dtype=np.int64)


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, caption_image: Sequence[int] | np.ndarray,
                      ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@k both ways (fractions in [0, 1]) from normalised embeddings; ``caption_image[j]`` owns caption j."""
    sim = image_emb @ text_emb.T
    return score_metrics(sim, sim.T, caption_image, ks)


def score_metrics(i2t_scores: np.ndarray, t2i_scores: np.ndarray, caption_image: Sequence[int] | np.ndarray,
                  ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@k both ways from score matrices (images x captions, captions x images) of any scoring: cosine, or
    cosine corrected for hubs (``inverted_softmax``). Higher ranks first; ties broken by index."""
    caption_image = np.asarray(caption_image, dtype=np.int64)
    n_img, n_txt = i2t_scores.shape
    if t2i_scores.shape != (n_txt, n_img):
        raise ValueError(f"text->image scores are {t2i_scores.shape}, expected {(n_txt, n_img)}")
    if len(caption_image) != n_txt:
        raise ValueError(f"{len(caption_image)} caption owners for {n_txt} caption embeddings")
    if n_img == 0 or n_txt == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if caption_image.min() < 0 or caption_image.max() >= n_img:
        raise ValueError("caption_image holds an index outside the images")
    owned = [np.flatnonzero(caption_image == i) for i in range(n_img)]
    no_caption = [i for i, t in enumerate(owned) if len(t) == 0]
    if no_caption:
        raise ValueError(f"{len(no_caption)} image(s) have no caption (first: index {no_caption[0]})")
    i2t_rank = first_rank(i2t_scores, owned)
    t2i_rank = first_rank(t2i_scores, [np.array([i]) for i in caption_image])
    out: dict = {"n_images": n_img, "n_captions": n_txt}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(i2t_rank < k))
    for k in ks:
        out[f"t2i_R@{k}"] = float(np.mean(t2i_rank < k))
    out["i2t_mean"] = float(np.mean([out[f"i2t_R@{k}"] for k in ks]))
    out["t2i_mean"] = float(np.mean([out[f"t2i_R@{k}"] for k in ks]))
    out["mean_recall"] = (out["i2t_mean"] + out["t2i_mean"]) / 2
    out["i2t_median_rank"] = float(np.median(i2t_rank + 1))
    out["t2i_median_rank"] = float(np.median(t2i_rank + 1))
    return out


def inverted_softmax(scores: np.ndarray, bank_scores: np.ndarray, beta: float) -> np.ndarray:
    """Query scores (queries x gallery) corrected for hubs, as querybank normalisation (QB-Norm, Bogolin et al.,
    CVPR 2022): each gallery item's score is taken relative to its soft-max over a bank of other queries
    (``bank_scores``: bank x gallery, e.g. training captions against the gallery images), so an item close to
    every query stops topping every list. The bank must not hold the test queries. Returns log-domain scores."""
    if bank_scores.ndim != 2 or bank_scores.shape[1] != scores.shape[1] or len(bank_scores) == 0:
        raise ValueError(f"bank scores are {bank_scores.shape}: expected (bank size > 0, {scores.shape[1]})")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    top = bank_scores.max(axis=0, keepdims=True)
    log_mass = np.log(np.exp(beta * (bank_scores - top)).sum(axis=0, keepdims=True)) + beta * top
    return beta * scores - log_mass


def evaluate_retrieval(model, images: CaptionSet | Sequence[str | Path | np.ndarray],
                       captions: Sequence[str | Sequence[str]] | None = None, ks: Sequence[int] = DEFAULT_KS,
                       progress: ProgressCallback | None = None) -> dict:
    """Retrieval recall of ``model``: a CaptionSet, or images plus ``captions[i]`` (one or several) per image."""
    if isinstance(images, CaptionSet):
        if captions is not None:
            raise ValueError("give captions inside the CaptionSet or as a separate list, not both")
        data = images
    else:
        data = CaptionSet.from_pairs(list(images), list(captions or []))
    image_emb = embed_images(model, data.image_paths, progress)
    text_emb = model.encode_text(data.captions)
    out = retrieval_metrics(image_emb, text_emb, data.caption_image, ks)
    out.update(model=model.run_label, provider=model.provider)
    if data.source:
        out["source"] = data.source
    return out
