"""Reference levels for retrieval recall on a caption set: the ceiling set by identical captions, and chance.

Ceiling. If identical strings embed identically, every copy of one string sees the same image ranking, and
rsclip_geo.evaluation.retrieval breaks equal scores by index. Hence, with c_s(i) the copies of string s
that image i owns:

- text->image at k: the copies of s can only hit for the k images at the top of s's one ranking, so at
  most the sum of the k largest c_s(i) hit; the ceiling is that sum over all strings / number of captions.
- image->text at k: copies of one string tie, and the lower caption index wins; even when the model
  ranks one of image i's strings first, its own first copy of it comes after every copy that precedes it in
  the caption list. Image i can hit at k only if, for some string of its own, fewer than k copies precede
  its first copy; the ceiling is the fraction of images for which that holds.

A set where no two images share a caption string has ceilings of 1 both ways. For a class-caption set
(every image of a class has the same captions) both are about k / images-per-class. Caveat: the shipped
int8 text encoder quantizes activations per batch, so copies of one string that land in different batches
differ slightly (cosine ~0.993) and are ordered by that noise instead of by index; a class-caption set then
still gets about k / images-per-class, but the ceiling is no longer a hard bound.

Chance: the expected recall of a ranking drawn at random (no ties): text->image k / n_images;
image->text for an image owning c of N captions 1 - C(N - c, k) / C(N, k), averaged over images.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from math import comb
from typing import Sequence

DEFAULT_KS = (1, 5, 10)


def recall_ceilings(captions: Sequence[Sequence[str]], ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Ceilings of i2t_R@k and t2i_R@k for images whose captions are `captions[i]`, listed image by image
    (the caption order of CaptionSet.from_pairs and of the Karpathy JSON files written here)."""
    owners: dict[str, Counter] = defaultdict(Counter)  # string -> image -> copies
    before_first: dict[int, list[int]] = defaultdict(list)  # image -> copies preceding its first copy, per string
    seen: Counter = Counter()  # string -> copies so far in caption order
    n_captions = 0
    for i, caps in enumerate(captions):
        for text in caps:
            if owners[text][i] == 0:  # image i's first copy of this string
                before_first[i].append(seen[text])
            owners[text][i] += 1
            seen[text] += 1
            n_captions += 1
    n_images = len(captions)
    if n_images == 0 or n_captions == 0:
        raise ValueError("no captions")
    out: dict = {"n_images": n_images, "n_captions": n_captions, "distinct_captions": len(owners),
                 "shared_captions": sum(1 for c in owners.values() if len(c) > 1)}
    for k in ks:
        hits = sum(1 for i in range(n_images) if before_first[i] and min(before_first[i]) < k)
        out[f"i2t_R@{k}"] = hits / n_images
    for k in ks:
        top = sum(sum(sorted(c.values(), reverse=True)[:k]) for c in owners.values())
        out[f"t2i_R@{k}"] = top / n_captions
    return out


def chance_recall(captions: Sequence[Sequence[str]], ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Expected i2t_R@k and t2i_R@k of a uniformly random ranking, for images with `captions[i]`."""
    n_images = len(captions)
    sizes = [len(c) for c in captions]
    n = sum(sizes)
    if n_images == 0 or n == 0:
        raise ValueError("no captions")
    out = {f"i2t_R@{k}": sum(1 - comb(n - c, k) / comb(n, k) for c in sizes) / n_images for k in ks}
    out.update({f"t2i_R@{k}": min(1.0, k / n_images) for k in ks})
    return out
