"""Retrieval recall averaged over the groups of a caption file (aid-heldout's groups.json).

Each split of the file is one retrieval set (a group); recall is measured within every group with the
runtime's metric (rsclip_geo.evaluation.retrieval.retrieval_metrics), then averaged (mean, std, min, max).
With a per-image flag field (`--by part`: seen / unseen), recall is also split by it: image->text over the
images with that flag, text->image over the captions of those images, ranked within their whole group.
Images are embedded once; captions group by group, as `rsclip-geo eval retrieval FILE --split GROUP` does
(the int8 text encoder's output depends a little on the batch a text is in), so a group's figures are that
command's.

    .venv/bin/python -m training.caption_sets.grouped runs/caption_sets/aid-heldout/groups.json --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from rsclip_geo.evaluation.datasets import read_captions
from rsclip_geo.evaluation.embed import embed_images
from rsclip_geo.evaluation.retrieval import DEFAULT_KS, first_rank, retrieval_metrics  # same ranking rule

def first_ranks(image_emb: np.ndarray, text_emb: np.ndarray,
                caption_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(0-based rank of each image's best-placed own caption, rank of each caption's image), as retrieval_metrics."""
    sim = image_emb @ text_emb.T
    owned = [np.flatnonzero(caption_image == i) for i in range(len(image_emb))]
    return first_rank(sim, owned), first_rank(sim.T, [np.array([i]) for i in caption_image])


def _items(path: Path) -> list[dict]:
    images = json.loads(Path(path).read_text(encoding="utf-8"))["images"]
    return [im for im in images if any(isinstance(s, dict) and str(s.get("raw", "")).strip()
                                       for s in im.get("sentences", []))]


def grouped_retrieval(model, path: str | Path, by: str | None = "part", ks: Sequence[int] = DEFAULT_KS,
                      progress=None) -> dict:
    path = Path(path)
    data = read_captions(path, split="all")  # images in file order, captions grouped per image
    items = _items(path)
    if len(items) != len(data.image_paths):
        raise ValueError(f"{path}: {len(items)} captioned entries but the reader found {len(data.image_paths)}")
    splits = np.array([it.get("split") for it in items])
    flags = np.array([str(it.get(by)) for it in items]) if by else None
    start = time.perf_counter()
    image_emb = embed_images(model, data.image_paths, progress)
    per_group, by_flag = {}, {}
    for group in sorted(set(splits)):
        idx = np.flatnonzero(splits == group)
        local = {int(g): n for n, g in enumerate(idx)}
        cap = np.flatnonzero(np.isin(data.caption_image, idx))
        owner = np.array([local[int(g)] for g in data.caption_image[cap]])
        text_emb = model.encode_text([data.captions[j] for j in cap])
        per_group[group] = retrieval_metrics(image_emb[idx], text_emb, owner, ks)
        if flags is None:
            continue
        i2t, t2i = first_ranks(image_emb[idx], text_emb, owner)
        for flag in sorted(set(flags[idx])):
            img_sel, cap_sel = flags[idx] == flag, flags[idx][owner] == flag
            row = by_flag.setdefault(flag, {"images": 0, "captions": 0, "i2t": [], "t2i": []})
            row["images"] += int(img_sel.sum())
            row["captions"] += int(cap_sel.sum())
            row["i2t"].append(i2t[img_sel])
            row["t2i"].append(t2i[cap_sel])
    summary = {}
    for key in [f"{d}_R@{k}" for d in ("i2t", "t2i") for k in ks] + ["i2t_mean", "t2i_mean", "mean_recall"]:
        values = np.array([m[key] for m in per_group.values()])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                        "max": float(values.max())}
    flagged = {}
    for flag, row in by_flag.items():
        i2t, t2i = np.concatenate(row["i2t"]), np.concatenate(row["t2i"])
        flagged[flag] = {"images": row["images"], "captions": row["captions"],
                         **{f"i2t_R@{k}": float(np.mean(i2t < k)) for k in ks},
                         **{f"t2i_R@{k}": float(np.mean(t2i < k)) for k in ks}}
        flagged[flag]["mean_recall"] = float(np.mean([flagged[flag][f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]))
    sizes = sorted({m["n_images"] for m in per_group.values()})
    return {"source": str(path), "model": model.bundle.name, "provider": model.provider, "groups": len(per_group),
            "images_per_group": sizes[0] if len(sizes) == 1 else sizes, "images": len(items),
            "captions": len(data.captions), "summary": summary, "by": by, "by_flag": flagged,
            "embed_and_score_seconds": round(time.perf_counter() - start, 1), "per_group": per_group}


def format_report(r: dict) -> str:
    pct = lambda v: f"{100 * v:5.1f}"  # noqa: E731
    lines = [f"{r['source']}: {r['groups']} groups of {r['images_per_group']} images; model {r['model']} "
             f"on {r['provider']}", "", "mean over groups (std)"]
    s = r["summary"]
    for d in ("i2t", "t2i"):
        lines.append(f"  {d}: " + "  ".join(f"R@{k} {pct(s[f'{d}_R@{k}']['mean'])} ({pct(s[f'{d}_R@{k}']['std'])})"
                                             for k in DEFAULT_KS) + f"  mean {pct(s[f'{d}_mean']['mean'])}")
    lines.append(f"  mean recall {pct(s['mean_recall']['mean'])} ({pct(s['mean_recall']['std'])})")
    for flag, row in r["by_flag"].items():
        lines.append(f"  {r['by']}={flag} ({row['images']} images, {row['captions']} captions): "
                     + "  ".join(f"{d} R@{k} {pct(row[f'{d}_R@{k}'])}" for d in ("i2t", "t2i") for k in DEFAULT_KS)
                     + f"  mean {pct(row['mean_recall'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import rsclip_geo

    ap = argparse.ArgumentParser(prog="python -m training.caption_sets.grouped", description=__doc__.splitlines()[0])
    ap.add_argument("captions", type=Path)
    ap.add_argument("--model", default=None, help="bundle folder or name (default: the shipped model)")
    ap.add_argument("--by", default="part", help="per-image field to split recall by ('' for none)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    model = rsclip_geo.load_model(args.model, device="cpu", threads=args.threads)
    report = grouped_retrieval(model, args.captions, by=args.by or None)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(format_report(report))
    print(f"took {report['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
