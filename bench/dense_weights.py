"""Dense head with fp32 weights vs float16-stored weights (fp32 compute): file size, session start, time per batch
of dense windows, peak RSS, and how far the cells move. Printed, not asserted.

The fp16-stored file is made from --fp32 by rsclip_geo.export.weight_storage (needs onnx, the export extra). The
shipped bundle's fp32 head is in the repository history, before the float16 conversion:

    git show 714eb11:rsclip_geo/models/default/dense_encoder.onnx > /tmp/dense_fp32.onnx
    .venv/bin/python bench/dense_weights.py --fp32 /tmp/dense_fp32.onnx [--windows 16] [--size 128] [--rounds 8]

Sessions are opened as the runtime opens them (rsclip_geo.runtime.encoder, all graph optimisations); timing
alternates the two heads; session start and peak RSS come from one fresh process per head and run (--procs).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from rsclip_geo.runtime.encoder import open_session  # noqa: E402


def _session(path: Path):
    return open_session(path, ["CPUExecutionProvider"], None, "cpu")


def _one_process(path: str, windows: int, size: int) -> None:
    """Child: session start time and peak RSS after one run of ``windows`` windows."""
    t = time.perf_counter()
    s = _session(Path(path))
    start = time.perf_counter() - t
    s.run(None, {"image": np.zeros((windows, 3, size, size), np.float32)})
    print(json.dumps({"start_s": start, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, help="A dense_encoder.onnx with fp32 weights.")
    ap.add_argument("--windows", type=int, default=16, help="Dense windows per run (one batch).")
    ap.add_argument("--size", type=int, default=128, help="Window side in model pixels.")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _one_process(a.child, a.windows, a.size)
        return 0
    if a.fp32 is None:
        ap.error("--fp32 is required")
    from rsclip_geo.export.weight_storage import store_file_fp16

    with tempfile.TemporaryDirectory() as tmp:
        fp16 = Path(tmp) / "dense_fp16.onnx"
        figures = store_file_fp16(a.fp32, fp16)
        paths = {"fp32": a.fp32, "fp16-stored": fp16}
        print(f"files: fp32 {figures['bytes_before']:,} B, fp16-stored {figures['bytes_after']:,} B "
              f"({figures['initializers']} initializers, {figures['values']:,} values to float16)")
        for name, path in paths.items():
            runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", str(path), "--windows",
                                               str(a.windows), "--size", str(a.size)], capture_output=True,
                                              text=True, check=True).stdout) for _ in range(a.procs)]
            print(f"{name:<12} session start s {[round(r['start_s'], 3) for r in runs]}, peak RSS MB "
                  f"{[round(r['peak_rss_mb'], 1) for r in runs]}")
        sessions = {k: _session(Path(p)) for k, p in paths.items()}
        x = np.random.default_rng(0).standard_normal((a.windows, 3, a.size, a.size)).astype(np.float32)
        out = {k: s.run(None, {"image": x})[0] for k, s in sessions.items()}
        u, v = (o.reshape(-1, o.shape[-1]) for o in out.values())
        cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
        print(f"cells: {len(cos)}, cosine min {cos.min():.7f}, max abs diff {np.abs(u - v).max():.4g} "
              f"(max |cell| {np.abs(u).max():.4g})")
        times = {k: [] for k in sessions}
        for _ in range(a.rounds):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"image": x})
                times[k].append(time.perf_counter() - t)
        for k, v in times.items():
            print(f"{k:<12} {a.windows} windows of {a.size} px: median {np.median(v):.3f} s, min {min(v):.3f} s "
                  f"({a.rounds} alternating rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
