"""Which views of an image a bundle labels best: the whole image, its quarter turns and flips, centred crops.

Why: the distillation stage (training/rotation_distill.py) can only teach the single view what some average of
views knows, so the teacher is chosen by measuring the averages first, on the AID-30 held-out split only (the
test sets of training/model_report.py take no part). Each view is embedded once through the runtime; an ensemble
is the normalised mean of its views' normalised embeddings, scored with the same class prompts as
``evaluate_zero_shot``. Crops are cut from the decoded image before it is resized, as the distillation does. The
model card's crop figures ("Ablation: a second distillation round with crop views") come from:

    python -m training.view_ensembles rsclip_geo/models/default --crops 0.6 0.7 0.8 0.9 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TURNS = range(4)


def view_embeddings(model, images: list[np.ndarray], crops=()) -> dict[tuple, np.ndarray]:
    """Normalised single-view embeddings keyed (view, turn): view 'whole', 'flip' (mirrored left-right) or
    'crop<f>' (centred crop of fraction f); turn = quarter turns 0-3. ``model`` must embed one view (rotations 1)."""
    from training.rotation_distill import centre_crop

    if model.rotations != 1:
        raise ValueError(f"view_embeddings needs a model loaded with rotations=1, got rotations={model.rotations}")
    bases = {"whole": model.preprocess(images)}
    bases["flip"] = np.ascontiguousarray(bases["whole"][..., ::-1])
    for f in crops:
        bases[f"crop{f:g}"] = model.preprocess([centre_crop(im, f) for im in images])
    return {(name, k): model.encode_images(np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))))
            for name, x in bases.items() for k in TURNS}


def ensembles(crops=()) -> dict[str, list[tuple]]:
    """Named view sets: one view, the four turns, turns x flips, and per crop fraction the crop alone and with the
    whole image."""
    four = [("whole", k) for k in TURNS]
    out = {"whole, one view": [("whole", 0)], "whole, 4 turns": four,
           "whole, 4 turns x 2 flips": four + [("flip", k) for k in TURNS]}
    for f in crops:
        crop = [(f"crop{f:g}", k) for k in TURNS]
        out[f"crop {f:g}, one view"] = crop[:1]
        out[f"crop {f:g}, 4 turns"] = crop
        out[f"whole + crop {f:g}, 4 turns each"] = four + crop
    return out


def ensemble_embedding(views: dict[tuple, np.ndarray], keys: list[tuple]) -> np.ndarray:
    from rsclip_geo.runtime.encoder import l2_normalize

    return l2_normalize(np.mean([views[k] for k in keys], axis=0, dtype=np.float32))


def measure(model, dataset, crops=(), classnames=None) -> dict[str, float]:
    """Zero-shot top-1 of every ensemble of ``ensembles(crops)`` on ``dataset`` (an ImageFolderDataset)."""
    from rsclip_geo.evaluation.datasets import load_rgb
    from rsclip_geo.evaluation.zero_shot import evaluate_zero_shot

    views = view_embeddings(model, [load_rgb(p) for p in dataset.paths], crops)
    return {name: evaluate_zero_shot(model, dataset, classnames=classnames,
                                     image_embeddings=ensemble_embedding(views, keys)).top1
            for name, keys in ensembles(crops).items()}


def main(argv=None) -> int:
    import rsclip_geo
    from training.model_report import REPO, aid30

    ap = argparse.ArgumentParser(prog="python -m training.view_ensembles", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--aid", type=Path, default=REPO.parent / "shared" / "data" / "aid",
                    help="AID root (default ../shared/data/aid); the held-out part of the fixed 30-class split")
    ap.add_argument("--crops", type=float, nargs="*", default=[0.8], help="centre-crop fractions in (0, 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    if any(not 0 < f < 1 for f in a.crops):
        ap.error(f"--crops must be fractions in (0, 1), got {a.crops}")
    model = rsclip_geo.load_model(a.bundle, device="cpu", threads=a.threads, batch_size=64)
    val, _ = aid30(a.aid)
    figures = measure(model, val, a.crops)
    for name, top1 in figures.items():
        print(f"{top1:.4f}  {name}")
    if a.json:
        a.json.write_text(json.dumps({"bundle": str(a.bundle), "set": "AID-30 held-out", "n": len(val.paths),
                                      "top1": figures}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
