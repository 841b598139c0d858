"""int8 vs fp32 bundles of one checkpoint: speed, size, embedding cosine and AID zero-shot top-1, in one run.

Compares the fp32 export of a checkpoint with its ``--int8`` export (dynamic int8 MatMul/Gemm/Gather weights
in the text encoder; a convolutional image encoder stays fp32 there) and, to measure why the image encoder is
kept fp32, two int8 image encoders made here from the fp32 one with the exporter's own ``quantize_int8``:
MatMul/Gemm only (the ops ``--int8`` quantises) and Conv + MatMul/Gemm. Printed (not asserted):

  text encoder    latency per query (one label through the bundle's prompt ensemble, median ms), texts/s of
                  ClipModel.encode_text (templates x AID class names; batches of 32 for fp32, one text per
                  run for int8, see ClipModel.text_runs_alone), file size, cosine int8 vs fp32 on the parity
                  texts
  image encoder   tiles/s at batch 32 (real AID images, preprocessed), file size, cosine vs fp32 on the
                  packaged parity crops + every evaluated AID image
  bundles         size on disk; AID zero-shot top-1, held-out seen 24-way and unseen 6-way (training/eval_bundle:
                  default templates x humanised class names; --per-class N images per class, seeded draw)

Make the two bundles first (runs/ is gitignored; the model config must be named after the architecture):

    mkdir -p /tmp/arch && cp runs/default/model_config.json /tmp/arch/RSCLIP-EfficientNetLite0-MiniLM.json
    rsclip-geo models export --arch /tmp/arch/RSCLIP-EfficientNetLite0-MiniLM.json \\
        --checkpoint runs/default/checkpoint_final.pt -o runs/int8bench/fp32
    rsclip-geo models export --arch /tmp/arch/RSCLIP-EfficientNetLite0-MiniLM.json \\
        --checkpoint runs/default/checkpoint_final.pt -o runs/int8bench/int8 --int8

then

    .venv/bin/python bench/int8_vs_fp32.py --fp32 runs/int8bench/fp32 --int8 runs/int8bench/int8 \\
        [--per-class 50] [--runs 15] [--threads 2] [--no-conv] [--aid ../shared/data/aid] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rsclip_geo.runtime.bundle import read_bundle  # noqa: E402
from rsclip_geo.runtime.encoder import ClipModel  # noqa: E402
from rsclip_geo.evaluation.zero_shot import zero_shot_from_embeddings  # noqa: E402
from rsclip_geo.export import parity as par  # noqa: E402
from rsclip_geo.export.onnx_export import INT8_OP_TYPES, quantize_int8  # noqa: E402
from rsclip_geo.runtime.prompts import humanize_class_name  # noqa: E402

QUERIES = ("baseball field", "storage tanks", "a harbour with boats", "dense residential area", "bare land",
           "a river crossing farmland")
CONV_OP_TYPES = ("Conv",) + INT8_OP_TYPES
BATCH = 32  # the speed figures
EVAL_BATCH = 64  # embeddings for cosine and accuracy, as training/eval_bundle (dynamic int8 activation ranges are
#                  per batch, so the int8 figures depend on it by an image or two)
MB = 1e6


def median_s(fns: dict, runs: int) -> dict[str, float]:
    """Median seconds of each callable; the variants take turns in every round, so a load change on a shared
    machine hits them alike. One warm-up call each first."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def with_image_encoder(bundle, onnx_file: Path, folder: Path):
    """A bundle folder = ``bundle`` with its image encoder replaced by ``onnx_file`` (other files linked)."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel in (bundle.text_encoder, bundle.text.tokenizer_file):
        try:
            os.symlink(bundle.path(rel).resolve(), folder / rel)
        except OSError:
            shutil.copy(bundle.path(rel), folder / rel)
    shutil.copy(onnx_file, folder / onnx_file.name)
    precision = {"image": "int8", "text": bundle.precision_of("text")}
    variant = dataclasses.replace(bundle, image_encoder=onnx_file.name, precision=precision, root=folder)
    variant.write(folder)
    return read_bundle(folder)


def load_aid(aid: Path, per_class: int, size: int, interpolation: str):
    """(held-out seen, unseen) as dicts of resized uint8 images, labels, classes: decoded once for all variants."""
    from PIL import Image

    from rsclip_geo.runtime.preprocess import resize_rgb
    from training.data.aid import aid_subset, load_split
    from training.eval_bundle import sample_per_class

    split, parts = load_split(), {}
    for part in ("val", "unseen"):
        sub = aid_subset(aid, part, split)
        paths, labels = sample_per_class(sub.paths, sub.labels, per_class)
        images = np.stack([resize_rgb(np.asarray(Image.open(p).convert("RGB")), size, interpolation) for p in paths])
        parts[part] = {"images": images, "labels": np.asarray(labels), "classes": list(sub.classes)}
    return parts


def fmt(v, digits=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", type=Path, required=True, help="fp32 bundle (models export without --int8)")
    ap.add_argument("--int8", type=Path, required=True, help="int8 bundle of the same checkpoint (--int8)")
    ap.add_argument("--aid", type=Path, default=REPO.parent / "shared" / "data" / "aid")
    ap.add_argument("--per-class", type=int, default=50, metavar="N",
                    help="AID images per class for accuracy and image cosine (seeded draw; 0 = all)")
    ap.add_argument("--runs", type=int, default=15,
                    help="timed rounds per figure, variants taking turns (median; one warm-up first)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--no-conv", dest="conv", action="store_false",
                    help="skip the int8 Conv + MatMul/Gemm image encoder (the slow one)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    b32, b8 = read_bundle(args.fp32), read_bundle(args.int8)
    if b32.source.get("sha256") != b8.source.get("sha256"):
        ap.error(f"{args.fp32} and {args.int8} were exported from different checkpoints (source.sha256)")
    if (b32.precision_of("image"), b32.precision_of("text")) != ("fp32", "fp32"):
        ap.error(f"{args.fp32} is not an fp32 bundle")
    if b8.precision_of("text") != "int8":
        ap.error(f"{args.int8} has no int8 text encoder")

    def load(bundle) -> ClipModel:
        return ClipModel(bundle, device="cpu", threads=args.threads, batch_size=BATCH)

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="int8bench."))
    try:
        # ---- image encoders: fp32, the int8 bundle's, int8 MatMul/Gemm, int8 Conv+MatMul/Gemm --------------
        images: dict[str, object] = {"fp32": b32}
        if b8.precision_of("image") == "int8":
            images["int8 MatMul/Gemm"] = b8  # a transformer image tower: --int8 already quantised it
        else:
            quantize_int8(b32.image_encoder_path, tmp / "image_encoder.int8.onnx", INT8_OP_TYPES)
            images["int8 MatMul/Gemm"] = with_image_encoder(b8, tmp / "image_encoder.int8.onnx", tmp / "mm")
        if args.conv:
            quantize_int8(b32.image_encoder_path, tmp / "image_encoder.conv.int8.onnx", CONV_OP_TYPES)
            images["int8 Conv+MatMul/Gemm"] = with_image_encoder(b8, tmp / "image_encoder.conv.int8.onnx",
                                                                 tmp / "conv")
        models = {name: load(b) for name, b in images.items()}
        m32, m8 = models["fp32"], load(b8)
        prep = m32.preprocess

        aid = load_aid(args.aid, args.per_class, b32.image.size, b32.image.interpolation)
        parity_raw, _ = par.parity_images()
        pool = aid["val"]["images"]
        speed_batch = np.ascontiguousarray(prep(pool[:: max(1, len(pool) // BATCH)][:BATCH]))

        # ---- text -----------------------------------------------------------------------------------------
        texts, _ = par.parity_texts(b32.templates)
        batch_texts = [t.format(c) for t in b32.templates for c in par.RS_CLASS_NAMES]
        text_models = {"fp32": m32, "int8": m8}
        query_s = median_s({k: (lambda m=m: [m.class_embeddings([q]) for q in QUERIES])
                            for k, m in text_models.items()}, args.runs)
        batch_s = median_s({k: (lambda m=m: m.encode_text(batch_texts)) for k, m in text_models.items()}, args.runs)
        text = {k: {"query_ms": query_s[k] / len(QUERIES) * 1e3, "texts_per_s": len(batch_texts) / batch_s[k],
                    "mb": m.bundle.text_encoder_path.stat().st_size / MB} for k, m in text_models.items()}
        for k, m in text_models.items():
            m.batch_size = EVAL_BATCH
            text[k]["emb"] = m.encode_text(texts)
        tcos = par.cosine_rows(text["fp32"]["emb"], text["int8"]["emb"])

        # ---- images -------------------------------------------------------------------------------------------
        image_s = median_s({k: (lambda m=m: m.encode_batch(speed_batch)) for k, m in models.items()}, args.runs)
        image = {}
        for k, m in models.items():  # parity crops, seen, unseen: each in chunks of EVAL_BATCH like eval_bundle
            m.batch_size = EVAL_BATCH
            parts = [parity_raw, aid["val"]["images"], aid["unseen"]["images"]]
            emb = [np.concatenate([m.encode_images(prep(p[i:i + EVAL_BATCH])) for i in range(0, len(p), EVAL_BATCH)])
                   for p in parts]
            image[k] = {"tiles_per_s": BATCH / image_s[k], "mb": m.bundle.image_encoder_path.stat().st_size / MB,
                        "emb": np.concatenate(emb), "val": emb[1], "unseen": emb[2]}
        ref = image["fp32"]["emb"]

        # ---- zero-shot: image variant x text variant as a bundle would pair them ------------------------------
        def top1(img_emb, m_text, part) -> float:
            d = aid[part]
            cls = m_text.class_embeddings([humanize_class_name(c) for c in d["classes"]])
            return zero_shot_from_embeddings(img_emb, d["labels"], cls, d["classes"]).top1

        configs = {"fp32 bundle": ("fp32", m32), "int8 bundle": ("fp32" if b8.precision_of("image") != "int8"
                                                                  else "int8 MatMul/Gemm", m8)}
        configs["int8 text + int8 MatMul/Gemm image"] = ("int8 MatMul/Gemm", m8)
        if args.conv:
            configs["int8 text + int8 Conv+MatMul/Gemm image"] = ("int8 Conv+MatMul/Gemm", m8)
        acc = {name: {part: top1(image[img][part], mt, part) for part in ("val", "unseen")}
               for name, (img, mt) in configs.items()}
        sizes = {"fp32 bundle": folder_bytes(b32.root) / MB, "int8 bundle": folder_bytes(b8.root) / MB}
        for name, b in images.items():
            if name != "fp32" and b.root != b8.root:
                sizes[f"int8 text + {name} image"] = (folder_bytes(b8.root) - b8.image_encoder_path.stat().st_size
                                                      + b.image_encoder_path.stat().st_size) / MB
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- the table ------------------------------------------------------------------------------------------
    import onnxruntime as ort

    per = f"{args.per_class} per class" if args.per_class else "all images"
    n_img = len(ref)
    print(f"int8 vs fp32: {args.fp32} vs {args.int8} (checkpoint {b32.source.get('checkpoint', '?')}); "
          f"onnxruntime {ort.__version__} CPUExecutionProvider, {args.threads} threads, {os.cpu_count()} CPU cores "
          f"({platform.processor() or platform.machine()}); medians of {args.runs} interleaved runs; AID {per} "
          f"(seen {len(aid['val']['labels'])}, unseen {len(aid['unseen']['labels'])} images)")
    rows = [("what", "fp32", "int8", "int8/fp32")]

    def row(what, a, b, digits=1, ratio=True):
        r = f"{b / a:.3f}" if ratio and isinstance(a, float) and isinstance(b, float) and a else "-"
        rows.append((what, fmt(a, digits), fmt(b, digits), r))

    t32, t8 = text["fp32"], text["int8"]
    row(f"text encoder: ms per query ({len(b32.templates)}-prompt ensemble)", t32["query_ms"], t8["query_ms"])
    row("text encoder: texts/s via encode_text (fp32 batch 32, int8 one per run)", t32["texts_per_s"], t8["texts_per_s"], 0)
    row("text encoder: file MB", t32["mb"], t8["mb"])
    row(f"text embedding cosine to fp32, min / mean ({len(texts)} parity texts)", "1",
        f"{tcos.min():.4f} / {tcos.mean():.4f}", ratio=False)
    i32 = image["fp32"]
    for name in images:
        if name == "fp32":
            continue
        iq = image[name]
        cos = par.cosine_rows(ref, iq["emb"])
        row(f"image encoder {name}: tiles/s at batch 32", i32["tiles_per_s"], iq["tiles_per_s"], 0)
        row(f"image encoder {name}: file MB", i32["mb"], iq["mb"])
        row(f"image encoder {name}: cosine to fp32, min / mean ({n_img} images)", "1",
            f"{cos.min():.4f} / {cos.mean():.4f}", ratio=False)
    for name, mb in sizes.items():
        if name != "fp32 bundle":
            row(f"bundle on disk, MB: {name}", sizes["fp32 bundle"], mb)
    for name, parts in acc.items():
        if name == "fp32 bundle":
            continue
        for part, label in (("val", "seen 24-way"), ("unseen", "unseen 6-way")):
            row(f"AID zero-shot top-1 {label} ({per}): {name}", acc["fp32 bundle"][part], parts[part], 3)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(rows[0]))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows[1:]:
        print(line(r))
    print(f"int8 bundle: {b8.parity.get('int8', {}).get('note', '')}")
    print(f"(wall time {time.perf_counter() - t0:.0f} s)")
    if args.json:
        out = {"settings": {"per_class": args.per_class, "runs": args.runs, "threads": args.threads,
                            "onnxruntime": ort.__version__},
               "text": {k: {kk: vv for kk, vv in v.items() if kk != "emb"} for k, v in text.items()},
               "text_cosine": {"min": float(tcos.min()), "mean": float(tcos.mean()), "n": len(texts)},
               "image": {k: {"tiles_per_s": v["tiles_per_s"], "mb": v["mb"],
                             "cosine_min": float(par.cosine_rows(ref, v["emb"]).min()),
                             "cosine_mean": float(par.cosine_rows(ref, v["emb"]).mean())} for k, v in image.items()},
               "bundle_mb": sizes, "zero_shot_top1": acc}
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
