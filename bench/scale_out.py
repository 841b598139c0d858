"""Scale-out: scenes/minute of ``batch index`` in-process vs 1 vs 2 local Dask worker processes.

Copies one real scene (default: shared data's NAIP 934x723 RGBN) N times and indexes the copies
with each configuration into a fresh folder. Dask workers get ``cores / workers`` onnxruntime
threads each, so 1 worker x 2 threads is compared with 2 workers x 1 thread on a 2-core machine.
Cluster start-up is timed separately; model loading on each worker is part of the batch time.
Not a unit test: numbers are printed, not asserted.

    python bench/scale_out.py [--model PATH | --synthetic] [--copies 8] [--workers 1,2] [--json]

Model: the shipped default when installed, else ``--model PATH``; ``--synthetic`` builds a
random-weight, compute-bound convolutional image encoder (~1 GMAC per 224 px tile, no download)
for machines without a real bundle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_SCENE = REPO.parent / "shared" / "data" / "scenes" / "naip_2020_rgbn_5m.tif"


def synthetic_bundle(folder: Path, size: int = 224) -> Path:
    """The tiny test bundle's text tower + a 4-layer random conv image tower (realistic cost, meaningless output)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tests.utils.tiny_bundle import build_tiny_bundle

    build_tiny_bundle(folder, size=size)
    rng = np.random.default_rng(0)
    layers = [(3, 64, 7, 2), (64, 128, 3, 2), (128, 256, 3, 2), (256, 256, 3, 1)]
    nodes, inits, x = [], [], "image"
    for i, (cin, cout, k, s) in enumerate(layers):
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], strides=[s, s], pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    inits.append(numpy_helper.from_array(rng.standard_normal((256, 3)).astype(np.float32), "proj"))
    nodes += [helper.make_node("ReduceMean", [x], ["pooled"], axes=[2, 3], keepdims=0),
              helper.make_node("MatMul", ["pooled", "proj"], ["embedding"])]
    graph = helper.make_graph(
        nodes, "synthetic_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              folder / "image_encoder.onnx")
    return folder


def run(config: str, scenes: list[Path], out: Path, model: str, batch_size: int) -> dict:
    from rsclip_geo.batch.jobs import batch_index

    startup = 0.0
    if config == "in-process":
        t = time.perf_counter()
        summary = batch_index(scenes, out, model, device="cpu", batch_size=batch_size)
        seconds = time.perf_counter() - t
    else:
        from distributed import Client, LocalCluster

        n = int(config)
        t = time.perf_counter()
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            startup = time.perf_counter() - t
            t = time.perf_counter()
            summary = batch_index(scenes, out, model, device="cpu", batch_size=batch_size, client=client)
            seconds = time.perf_counter() - t
    if not summary.ok or len(summary.done) != len(scenes):
        raise SystemExit(summary.describe())
    tiles = sum(r.tiles for r in summary.done)
    return {"config": config if config == "in-process" else f"{config} dask worker(s)",
            "scenes": len(scenes), "tiles": tiles, "seconds": round(seconds, 2),
            "scenes_per_min": round(len(scenes) / seconds * 60, 1), "tiles_per_s": round(tiles / seconds, 1),
            "cluster_startup_s": round(startup, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    ap.add_argument("--synthetic", action="store_true", help="use a random compute-bound bundle (no real model)")
    ap.add_argument("--scene", type=Path, default=DEFAULT_SCENE)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process (no Dask) baseline")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.synthetic:
            model = str(synthetic_bundle(tmp / "synthetic_bundle"))
        elif args.model:
            model = args.model
        elif (DEFAULT_MODEL_DIR / "model.json").is_file():
            model = str(DEFAULT_MODEL_DIR)
        else:
            ap.error("no shipped default model in this copy: pass --model PATH (or --synthetic)")
        scenes = [Path(shutil.copy(args.scene, tmp / f"copy{i:03d}{args.scene.suffix}")) for i in range(args.copies)]
        configs = ([] if args.no_in_process else ["in-process"]) + [w.strip() for w in args.workers.split(",")]
        rows = [run(c, scenes, tmp / f"out_{c}", model, args.batch_size) for c in configs]
    from rsclip_geo.batch.dask_client import usable_cores
    from rsclip_geo.runtime.bundle import read_bundle

    name = "synthetic conv (random weights)" if args.synthetic else read_bundle(model).name
    if args.json:
        print(json.dumps({"model": name, "cores": usable_cores(), "scene": str(args.scene), "runs": rows}))
    else:
        print(f"model {name}; {usable_cores()} cores; {args.copies} copies of {args.scene.name}")
        for r in rows:
            print(f"{r['config']:>20}: {r['scenes_per_min']:7.1f} scenes/min  {r['tiles_per_s']:7.1f} tiles/s  "
                  f"({r['tiles']} tiles in {r['seconds']} s; cluster start {r['cluster_startup_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
