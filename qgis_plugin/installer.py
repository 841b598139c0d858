"""The one-click installer: pip, run with QGIS's own Python, into the plugin's dependency folder.

QGIS's packages are never replaced: a constraints file pins every package its Python
already has (numpy < 2 when it has none), and pip works in a fresh ``<folder>.new``
that replaces the old folder only when it succeeded (deps.finish_pending).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .deps import (COMPLETE_MARK, NEWER_THAN_QGIS, REQUIREMENTS, VENDOR_FOLDER, finish_pending, python_executable,
                   satisfies)

_RELEASE = re.compile(r"^\d+(\.\d+)*$")


def qgis_owned_pins(exclude: Iterable[Path] = ()) -> dict[str, str]:
    """Every distribution QGIS's Python already has, with its version, outside our own folders."""
    exclude = [str(Path(p).resolve()) for p in exclude]
    pins: dict[str, str] = {}
    for d in md.distributions():
        name, version = (d.metadata["Name"] or ""), d.version or ""
        where = str(Path(str(getattr(d, "_path", ""))).resolve())
        if not name or not _RELEASE.match(version) or any(where.startswith(e) for e in exclude):
            continue
        pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), version)
    return pins


def constraints_text(pins: dict[str, str], strict: bool = True) -> str:
    """numpy < 2 unless QGIS has a numpy (then exactly that one); strict: pin all of QGIS's packages.

    NEWER_THAN_QGIS packages are left free when QGIS's copy is too old (the requirement is added instead).
    """
    lines = ["# written by the rsclip-geo plugin: never replace QGIS's own packages"]
    if "numpy" not in pins:
        lines.append("numpy<2")
    free = {dist for _, dist, req in NEWER_THAN_QGIS if dist in pins and not satisfies(pins[dist], req)}
    ours = {"numpy"} | {r[1].lower() for r in REQUIREMENTS}
    keep = {k: v for k, v in pins.items() if k not in free and (strict or k in ours)}
    lines += [f"{name}=={version}" for name, version in sorted(keep.items())]
    return "\n".join(lines) + "\n"


def install_requirements(pins: dict[str, str]) -> list[str]:
    """Ours, plus the newer copy of each NEWER_THAN_QGIS package QGIS holds too old."""
    extra = [req for _, dist, req in NEWER_THAN_QGIS if dist in pins and not satisfies(pins[dist], req)]
    return [r[2] for r in REQUIREMENTS] + extra


def pip_command(python: Path, target: Path, requirements: Sequence[str], constraints: Path,
                wheelhouse: Path | None = None) -> list[str]:
    """pip into ``target`` only (``--target`` also keeps pip away from externally managed system Pythons)."""
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--target", str(target), "--upgrade", "--only-binary", ":all:", "-c", str(constraints)]
    if wheelhouse is not None:  # offline: a folder of wheels prepared with `pip download`
        cmd += ["--no-index", "--find-links", str(wheelhouse)]
    return cmd + list(requirements)


def install(target: Path, requirements: Sequence[str] | None = None, wheelhouse: Path | None = None,
            log: Callable[[str], None] = lambda line: None, canceled: Callable[[], bool] = lambda: False,
            python: Path | None = None) -> int:
    """pip into a fresh ``<target>.new`` (strict pins first, then only ours), then swap it in.

    A failed or canceled install leaves the working folder as it was. Returns pip's exit code.
    Blocking: call it from a QgsTask, never from the GUI thread.
    """
    python = python or python_executable()
    target = Path(target)
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pins = qgis_owned_pins(exclude=[target.parent, VENDOR_FOLDER])
    requirements = list(requirements or install_requirements(pins))
    rc = 1
    for strict in (True, False):
        constraints = target.parent / f"constraints-{target.name}.txt"
        constraints.write_text(constraints_text(pins, strict), encoding="utf-8")
        cmd = pip_command(python, staging, requirements, constraints, wheelhouse)
        log(("$ " if strict else "retrying with only numpy and our own packages pinned:\n$ ") + " ".join(cmd))
        rc = _run(cmd, log, canceled)
        if rc == 0 or canceled():
            break
    if rc != 0 or canceled():
        shutil.rmtree(staging, ignore_errors=True)
        return rc or 1
    (staging / COMPLETE_MARK).touch()
    if finish_pending(target):
        log(f"installed into {target}")
    else:
        log(f"installed into {staging}; restart QGIS to use it (files of the old folder are in use)")
    importlib.invalidate_caches()
    return 0


def _run(cmd: list[str], log: Callable[[str], None], canceled: Callable[[], bool]) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:  # the with block closes the pipe (no ResourceWarning) and reaps pip
            log(line.rstrip())
            if canceled():
                proc.terminate()
                break
        return proc.wait()
