"""The machine and library versions a training run ran on, one JSON record per start of the run.

Why: floating-point results of CPU kernels depend on the instruction set the libraries pick (AVX2 vs AVX-512)
and on library versions, so two runs of one config on one machine agree byte for byte while runs on two
machines may not. A record per start (a resumed run may land on another machine) is what lets such a gap be
told apart from a change in code or data.
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


def describe_environment(threads: int | None = None) -> dict:
    """{"environment": {...}}: python, package versions, CPU model and count, torch's CPU kernel level, device."""
    import torch

    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "packages": _versions(),
    }
    return {"environment": env}
