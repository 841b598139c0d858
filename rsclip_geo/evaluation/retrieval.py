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
    caption_image = np.asarray(caption_image, dtype=np.int64)
    n_img, n_txt = len(image_emb), len(text_emb)
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
    sim = image_emb @ text_emb.T
    i2t_rank = first_rank(sim, owned)
    t2i_rank = first_rank(sim.T, [np.array([i]) for i in caption_image])
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
