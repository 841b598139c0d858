"""The CUDA paths, measured: what bench/gpu.sh runs once onnxruntime-gpu is installed.

  1. image encoder img/s, fp32 and fp16, batch 32 and 128, IO binding on and off (random preprocessed batches,
     the same ``ClipModel.encode_batch`` the tiler calls);
  2. end-to-end ``tile_classify`` vs the bare image encoder (bench/throughput.py, on CUDA), with the fixed batch
     shape (the default on CUDA) at batch 32 and 128, and without it at batch 32;
  3. zero-shot top-1 of the fp16 vs the fp32 image encoder on the AID held-out split (val: seen classes,
     unseen: held-out classes), at most --per-class images per class, the seeded draw of training/eval_bundle.py.

The fp16 bundle is the shipped one with its image encoder converted by ``export.onnx_export.convert_fp16``,
the function ``models export --fp16`` uses (onnxconverter-common, no torch: the shipped model has no torch
checkpoint here); the text encoder is shared, so top-1 differences come from the image encoder alone.

    python bench/gpu_bench.py [--aid DIR] [--per-class 25] [--seconds 3] [--json OUT]     (needs CUDA)
    python bench/gpu_bench.py --stage-aid OUT [--aid DIR] [--per-class 25]                 (no GPU: copies the
        images part 3 reads, to carry them to a machine without the shared data folder)
Numbers are printed, not asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_AID = REPO.parent / "shared" / "data" / "aid"
PARTS = ("val", "unseen")


def held_out(aid: Path, part: str, per_class: int) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, classes) of one held-out part: the same seeded draw as training/eval_bundle.py --per-class,
    taken from the split file, so a folder holding only the drawn images (--stage-aid) gives the same set."""
    from training.data.aid import load_split
    from training.eval_bundle import sample_per_class

    split = load_split()
    classes = sorted(split[part])
    paths = [aid / name / f for k, name in enumerate(classes) for f in split[part][name]]
    labels = [k for k, name in enumerate(classes) for _ in split[part][name]]
    paths, labels = sample_per_class(paths, labels, per_class)
    return paths, labels, classes


def stage_aid(aid: Path, out: Path, per_class: int) -> None:
    n = 0
    for part in PARTS:
        for p in held_out(aid, part, per_class)[0]:
            dst = out / p.parent.name / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)
            n += 1
    print(f"staged {n} AID held-out images ({per_class} per class at most) in {out}")


def fp16_bundle(src: Path, dst: Path) -> Path:
    """A copy of bundle ``src`` whose image encoder is float16 (float32 inputs/outputs)."""
    from rsclip_geo.runtime.bundle import read_bundle
    from rsclip_geo.export.onnx_export import convert_fp16

    b = read_bundle(src)
    dst.mkdir(parents=True, exist_ok=True)
    # every file model.json names must exist (read_bundle checks): the dense encoder too, unused here
    for name in (b.text_encoder, b.text.tokenizer_file, *((b.dense.file,) if b.dense else ())):
        shutil.copy2(src / name, dst / name)
    image_file = b.image_encoder.replace(".onnx", ".fp16.onnx")
    convert_fp16(src / b.image_encoder, dst / image_file)
    data = json.loads((src / "model.json").read_text(encoding="utf-8"))
    data["image_encoder"] = image_file
    data["precision"] = {"image": "fp16", "text": b.precision_of("text")}
    data.pop("image_weights", None)  # float16 throughout now, not fp32 compute over float16-stored weights
    data["name"] = f"{b.name}-fp16-image"
    (dst / "model.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    read_bundle(dst)  # valid as written
    return dst


def images_per_s(model, batch_size: int, seconds: float) -> float:
    s = model.bundle.image.size
    batch = np.random.default_rng(0).standard_normal((batch_size, 3, s, s)).astype(np.float32)
    for _ in range(3):  # warm-up: CUDA kernels, cuDNN algorithm search, arenas
        model.encode_batch(batch)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        model.encode_batch(batch)
        n += 1
    return n * batch_size / (time.perf_counter() - t0)


def encoder_speed(bundles: dict[str, Path], seconds: float, device: str) -> list[dict]:
    import rsclip_geo

    rows = []
    for precision, folder in bundles.items():
        for batch in (32, 128):
            for binding in (True, False):
                model = rsclip_geo.load_model(folder, device=device, batch_size=batch, io_binding=binding)
                rate = images_per_s(model, batch, seconds)
                rows.append({"precision": precision, "batch": batch, "io_binding": binding,
                             "images_per_s": round(rate, 1), "provider": model.provider})
                print(f"image encoder {precision} batch {batch:>3} io_binding {'on ' if binding else 'off'}: "
                      f"{rate:9.1f} img/s ({model.provider})", flush=True)
    return rows


def end_to_end(bundles: dict[str, Path], rounds: int, device: str, size: int) -> list[dict]:
    """bench/throughput.py on CUDA: tile_classify tiles/s vs the bare image encoder, same batch size."""
    import contextlib
    import io

    from bench.throughput import main as throughput

    rows = []
    # the default (fixed batch shape on CUDA) at batch 32 and 128, then batch 32 with it off: what a scene's
    # short last batch costs when every new input shape means a new cuDNN algorithm search
    runs = [(p, f, b, "auto") for p, f in bundles.items() for b in (32, 128)]
    runs += [(p, f, 32, "off") for p, f in bundles.items()]
    for precision, folder, batch, fixed in runs:
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            throughput(["--model", str(folder), "--device", device, "--batch-size", str(batch),
                        "--rounds", str(rounds), "--size", str(size), "--fixed-batch", fixed, "--json"])
        row = {"precision": precision, **json.loads(text.getvalue().strip().splitlines()[-1])}
        rows.append(row)
        print(f"end to end {precision} batch {batch:>3} fixed batch {'on ' if row['fixed_batch'] else 'off'}: "
              f"tile_classify {row['e2e_tiles_per_s']:.1f} tiles/s vs bare encoder {row['bare_ort_tiles_per_s']:.1f}: "
              f"ratio {row['ratio_vs_bare_ort']:.3f} (per round {row['ratio_per_round']}, {row['provider']})",
              flush=True)
    return rows


def zero_shot(bundles: dict[str, Path], aid: Path, per_class: int, device: str) -> dict:
    import rsclip_geo
    from training.eval_bundle import bundle_zero_shot

    out: dict = {}
    models = {p: rsclip_geo.load_model(f, device=device, batch_size=64) for p, f in bundles.items()}
    for part in PARTS:
        paths, labels, classes = held_out(aid, part, per_class)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} AID images missing under {aid}, e.g. {missing[0]} (a staged "
                                    "folder: stage it with the same --per-class)")
        out[part] = {p: round(bundle_zero_shot(m, paths, labels, classes)["top1"], 4) for p, m in models.items()}
        out[part]["n"] = len(paths)
        print(f"AID {part} ({len(classes)}-way, n={len(paths)}): top-1 fp32 {out[part]['fp32']:.4f}, "
              f"fp16 {out[part]['fp16']:.4f}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="fp32 bundle folder (default: the shipped model)")
    ap.add_argument("--aid", type=Path, default=DEFAULT_AID, help="AID folder (class sub-folders)")
    ap.add_argument("--per-class", type=int, default=25, help="AID images per class at most (0: all)")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per encoder configuration")
    ap.add_argument("--rounds", type=int, default=3, help="bench/throughput.py rounds")
    ap.add_argument("--e2e-size", type=int, default=4096, help="side of the bench/throughput.py scene, pixels")
    ap.add_argument("--device", default="cuda", help="cuda; 'cpu' only to smoke-test this script without a GPU")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    ap.add_argument("--stage-aid", type=Path, default=None, metavar="OUT",
                    help="no GPU needed: copy the AID images part 3 reads into OUT, then exit")
    args = ap.parse_args(argv)
    if args.stage_aid:
        stage_aid(args.aid, args.stage_aid, args.per_class)
        return 0

    import onnxruntime as ort

    from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"gpu_bench: onnxruntime {ort.__version__} has no CUDAExecutionProvider "
              f"({ort.get_available_providers()}); install onnxruntime-gpu (bench/gpu.sh does)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results: dict = {"onnxruntime": ort.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = args.model or DEFAULT_MODEL_DIR
        bundles = {"fp32": fp32, "fp16": fp16_bundle(fp32, Path(tmp) / "fp16")}
        results["encoder"] = encoder_speed(bundles, args.seconds, args.device)
        results["e2e"] = end_to_end(bundles, args.rounds, args.device, args.e2e_size)
        if any(args.aid.glob("*/*.jpg")):
            results["aid_top1"] = zero_shot(bundles, args.aid, args.per_class, args.device)
        else:
            print(f"AID top-1 skipped: no images under {args.aid} (stage them with --stage-aid)", flush=True)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(f"done in {results['seconds']} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
