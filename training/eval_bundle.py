"""Zero-shot AID accuracy of an exported ONNX bundle through the runtime (rsclip_geo.load_model).

Why: the shipped numbers must hold for what users run (ONNX, int8 text encoder, PIL preprocessing),
not only for the torch checkpoint. Same split, class names and templates as training.evaluate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def sample_per_class(paths, labels, n: int | None, seed: int = 0) -> tuple[list, list]:
    """At most ``n`` images per class (None or 0: all): a seeded draw kept in file order, the same draw as
    rsclip_geo.evaluation's ImageFolderDataset.from_folder(limit_per_class=n, seed=seed)."""
    paths, labels = list(paths), list(labels)
    if not n:
        return paths, labels
    if n < 0:
        raise ValueError(f"images per class must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    keep: list[int] = []
    for k in sorted(set(labels)):
        idx = np.flatnonzero(y == k)
        keep.extend(idx[np.sort(rng.choice(len(idx), size=n, replace=False))] if len(idx) > n else idx)
    return [paths[i] for i in keep], [labels[i] for i in keep]


def bundle_zero_shot(model, paths, labels, classes) -> dict:
    from PIL import Image

    from rsclip_geo.runtime.prompts import humanize_class_name

    text = model.class_embeddings([humanize_class_name(c) for c in classes])
    preds = []
    for i in range(0, len(paths), 64):
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in paths[i:i + 64]]
        preds.append((model.encode_images(imgs) @ text.T).argmax(1))
    pred, y = np.concatenate(preds), np.asarray(labels)
    return {"top1": float((pred == y).mean()), "n": int(y.size),
            "per_class": {c: float((pred[y == k] == k).mean()) for k, c in enumerate(classes)}}


def main(argv=None) -> None:
    import rsclip_geo
    from training.data.aid import aid_subset, load_split
    from training.evaluate import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--aid", type=Path, default=Path("../shared/data/aid"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=0, metavar="N",
                    help="at most N images per class (seeded draw, seed 0) for a quick run; 0 = all (default)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    model = rsclip_geo.load_model(args.bundle, device="cpu", threads=args.threads, batch_size=64)
    split, report = load_split(), {}
    for part in ("val", "unseen"):
        sub = aid_subset(args.aid, part, split)
        paths, labels = sample_per_class(sub.paths, sub.labels, args.per_class)
        report[part] = bundle_zero_shot(model, paths, labels, list(sub.classes))
        limit = f", at most {args.per_class} per class" if args.per_class else ""
        print(format_table(f"{args.bundle} AID {part} ({len(sub.classes)}-way{limit})", report[part]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
