"""The machine and library versions a training run ran on, one JSON record per start of the run.

Why: floating-point results of CPU kernels depend on the instruction set the libraries pick (AVX2 vs AVX-512)
and on library versions, so two runs of one config on one machine agree byte for byte while runs on two
machines may not. A record per start (a resumed run may land on another machine) is what lets such a gap be
told apart from a change in code or data. The kernel fingerprint is the quick test of that: a few seeded conv
layers run forward and backward; two machines (or thread counts) whose fingerprints differ round differently, and
a long run on one will not rebuild the bytes of a run made on the other.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "transformers", "numpy", "pillow", "onnxruntime")


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")  # what CPU kernels dispatch on


def _cpu() -> dict:
    """The CPU as /proc/cpuinfo names it (model name, family / model / stepping, the vector extensions torch's
    and onnxruntime's kernels choose between); on other systems what platform says."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor describes them all
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        return {"model": platform.processor() or platform.machine()}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name"), "family": fields.get("cpu family"), "model_id": fields.get("model"),
            "stepping": fields.get("stepping"), "isa": [f for f in ISA_FLAGS if f in flags]}


def _versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def kernel_fingerprint(seed: int = 0) -> str:
    """SHA-256 (16 hex digits) of a seeded conv stack's output and weight gradients at torch's current thread count.

    Made of the layer kinds the image tower trains (strided, depthwise and pointwise convolutions, SiLU, a linear
    head) with functional ops and a local generator, so computing it never draws from the global random stream a
    run depends on. Equal on one machine every time; shown to change with the thread count (oneDNN splits the work
    differently), so compare fingerprints taken at the run's thread count."""
    import hashlib

    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)

    def weight(*shape):
        return (torch.randn(shape, generator=g) * 0.1).requires_grad_()

    w = [weight(32, 3, 3, 3), weight(32, 1, 3, 3), weight(64, 32, 1, 1), weight(96, 64, 3, 3), weight(64, 96)]
    x = torch.randn(8, 3, 128, 128, generator=g)
    h = F.silu(F.conv2d(x, w[0], stride=2, padding=1))
    h = F.silu(F.conv2d(F.conv2d(h, w[1], padding=1, groups=32), w[2]))
    h = F.conv2d(h, w[3], stride=2, padding=1).mean(dim=(2, 3))
    y = h @ w[4].T
    (y ** 2).mean().backward()
    digest = hashlib.sha256(y.detach().numpy().tobytes())
    for t in w:
        digest.update(t.grad.numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_environment(threads: int | None = None) -> dict:
    """{"environment": {...}}: python, package versions, CPU model and count, torch's CPU kernel level and kernel
    fingerprint, device."""
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "kernel_fingerprint": kernel_fingerprint(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": _versions(),
    }
    return {"environment": env}
