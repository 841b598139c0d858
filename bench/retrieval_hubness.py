"""How much of the RSICD retrieval gap is hubness? Plain cosine against querybank normalisation (QB-Norm).

Some images sit close to almost every caption (and some captions to every image); they top many lists and push the
right answers down. QB-Norm (``rsclip_geo.evaluation.retrieval.inverted_softmax``) scores each gallery item
relative to its soft-max over a bank of *training* queries: RSICD train images for image->text, their captions for
text->image (a seeded sample; never val or test). beta is picked per direction on RSICD val, then test is measured
once with it. Published figures (RemoteCLIP, GeoRSCLIP) are plain cosine: compare those with the plain row.

    .venv/bin/python bench/retrieval_hubness.py [--model PATH] [--bank 3000] [--json out.json]

Needs RSICD images and VT-RSBS's RSICD.csv under $RSCLIP_DATA (training/DATA.md). ~3 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rsclip_geo.evaluation.retrieval import inverted_softmax, score_metrics  # noqa: E402

BETAS = (5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 100.0)


def rsicd_split(root: Path, split: str):
    from training.model_report import rsicd_split as read_split

    recs = read_split(root, split)
    if recs is None:
        raise SystemExit(f"error: RSICD images or VT-RSBS's RSICD.csv not under {root} (training/DATA.md)")
    return recs


def embed(model, recs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from rsclip_geo.evaluation.embed import embed_images

    owner = np.array([i for i, r in enumerate(recs) for _ in r.captions])
    return embed_images(model, [r.image for r in recs]), model.encode_text([c for r in recs for c in r.captions]), owner


def metrics(img, txt, owner, bank_img=None, bank_txt=None, beta_i2t=None, beta_t2i=None) -> dict:
    sim = img @ txt.T
    i2t = sim if beta_i2t is None else inverted_softmax(sim, bank_img @ txt.T, beta_i2t)
    t2i = sim.T if beta_t2i is None else inverted_softmax(sim.T, bank_txt @ img.T, beta_t2i)
    return score_metrics(i2t, t2i, owner)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="rsclip_geo/models/default")
    ap.add_argument("--bank", type=int, default=3000, help="RSICD train images in the bank (5 captions each).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    import rsclip_geo
    from training.data.manifests import data_root

    root = data_root()
    model = rsclip_geo.load_model(a.model, device="cpu", threads=a.threads, batch_size=64)
    t0 = time.perf_counter()
    train = rsicd_split(root, "train")
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:a.bank])
    bank_img, bank_txt, _ = embed(model, [train[i] for i in pick])
    val, test = embed(model, rsicd_split(root, "val")), embed(model, rsicd_split(root, "test"))
    seconds = time.perf_counter() - t0
    grid = {b: metrics(*val, bank_img, bank_txt, b, b) for b in BETAS}
    beta_i2t = max(BETAS, key=lambda b: grid[b]["i2t_mean"])
    beta_t2i = max(BETAS, key=lambda b: grid[b]["t2i_mean"])
    out = {"model": a.model, "bank_images": len(pick), "bank_captions": len(bank_txt), "embed_seconds": seconds,
           "val_grid": {str(b): {k: grid[b][k] for k in ("i2t_mean", "t2i_mean", "mean_recall")} for b in BETAS},
           "beta": {"i2t": beta_i2t, "t2i": beta_t2i},
           "val": {"plain": metrics(*val), "qbnorm": metrics(*val, bank_img, bank_txt, beta_i2t, beta_t2i)},
           "test": {"plain": metrics(*test), "qbnorm": metrics(*test, bank_img, bank_txt, beta_i2t, beta_t2i)}}
    keys = [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
    print(f"bank: {len(pick)} RSICD train images / {len(bank_txt)} captions; beta (picked on val) i2t {beta_i2t:g}, "
          f"t2i {beta_t2i:g}; embedding {seconds:.0f} s")
    print(f"{'split':<5} {'scoring':<7} " + " ".join(f"{k:>9}" for k in keys) + "  mean recall")
    for split in ("val", "test"):
        for scoring in ("plain", "qbnorm"):
            m = out[split][scoring]
            print(f"{split:<5} {scoring:<7} " + " ".join(f"{100 * m[k]:9.1f}" for k in keys)
                  + f"  {100 * m['mean_recall']:.1f}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
