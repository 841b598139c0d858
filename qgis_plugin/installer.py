"""The one-click installer: pip, run with QGIS's own Python, into the plugin's dependency folder.

QGIS's packages are never replaced: a constraints file pins every package its Python
already has (numpy < 2 when it has none), and pip works in a fresh ``<folder>.new``
that replaces the old folder only when it succeeded (deps.finish_pending). Nor are they
copied: pip first resolves everything (a dry run with a report), the packages QGIS's
Python already has at the resolved version (numpy, pyproj, pillow...) are left out, and
the rest is installed with ``--no-deps``.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .deps import (COMPLETE_MARK, NEWER_THAN_QGIS, REQUIREMENTS, VENDOR_FOLDER, finish_pending, python_executable,
                   satisfies)

_RELEASE = re.compile(r"^\d+(\.\d+)*$")
# Measured with install() on Debian 12's Python 3.11 (QGIS 3.22's), Linux x86_64, on 2026-12-01: 30 wheels
# (160 MB; numpy, pyproj, pillow and 8 more reused from QGIS's Python) -> 578 MB in the deps folder (pyarrow 140,
# pyogrio + its GDAL 103, pandas 79, onnxruntime 78, rasterio + its GDAL 108). See the plugin README.
SIZE_NOTE = ("About 160 MB are downloaded and about 580 MB written to disk (measured on Linux x86_64 with "
             "Python 3.11; other systems differ).")


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
                wheelhouse: Path | None = None, extra: Sequence[str] = ()) -> list[str]:
    """pip into ``target`` only (``--target`` also keeps pip away from externally managed system Pythons)."""
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--target", str(target), "--upgrade", "--only-binary", ":all:", "-c", str(constraints), *extra]
    if wheelhouse is not None:  # offline: a folder of wheels prepared with `pip download`
        cmd += ["--no-index", "--find-links", str(wheelhouse)]
    return cmd + list(requirements)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def interpreter_pins(python: Path) -> dict[str, str]:
    """The distributions ``python`` itself sees (as the worker does: no PYTHONPATH), name -> version."""
    code = ("import importlib.metadata as md, json; print(json.dumps([(d.metadata['Name'] or '', d.version) "
            "for d in md.distributions()]))")  # in sys.path order: the first of a name is the one imported
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=120)
    if out.returncode != 0:
        return {}
    found: dict[str, str] = {}
    for name, version in json.loads(out.stdout.strip().splitlines()[-1]):
        if name and version:
            found.setdefault(_key(name), version)
    return found


def select_installs(resolved: Iterable[tuple[str, str]], have: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split pip's resolution ((name, version) pairs) into what to install and what QGIS's Python already has
    at that very version (``have``: interpreter_pins), which the worker imports from there: numpy, pyproj,
    pillow... are not downloaded and copied again. A NEWER_THAN_QGIS package is always installed when QGIS's
    copy is too old. Returns (``name==version`` to install, ``name==version`` reused)."""
    too_old = {dist for _, dist, req in NEWER_THAN_QGIS if dist in have and not satisfies(have[dist], req)}
    install, reuse = [], []
    for name, version in resolved:
        key = _key(name)
        (reuse if have.get(key) == version and key not in too_old else install).append(f"{key}=={version}")
    return install, reuse


def _resolve(python, staging, requirements, constraints, wheelhouse, log, canceled) -> list[tuple[str, str]] | None:
    """pip's resolution of ``requirements`` for ``staging`` (a dry run with a JSON report; None if it failed)."""
    report = staging.parent / f"{staging.name}-report.json"
    cmd = pip_command(python, staging, requirements, constraints, wheelhouse,
                      extra=("--dry-run", "--ignore-installed", "--report", str(report)))
    log("$ " + " ".join(cmd))
    try:
        if _run(cmd, log, canceled) != 0 or not report.is_file():
            return None
        items = json.loads(report.read_text(encoding="utf-8")).get("install", [])
        return [(i["metadata"]["name"], i["metadata"]["version"]) for i in items]
    except (OSError, ValueError, KeyError):
        return None
    finally:
        report.unlink(missing_ok=True)


def _pip(python, staging, requirements, constraints, wheelhouse, have, log, canceled) -> int:
    """Resolve, leave out what QGIS's Python has at the resolved version, install the rest without deps.
    A pip too old for ``--report`` (< 22.2) installs the requirements as they are."""
    resolved = _resolve(python, staging, requirements, constraints, wheelhouse, log, canceled)
    if canceled():
        return 1
    extra: tuple[str, ...] = ()
    if resolved is not None:
        requirements, reuse = select_installs(resolved, have)
        extra = ("--no-deps",)
        log(f"already in QGIS's Python, not installed again: {', '.join(reuse) or 'none'}")
        if not requirements:
            return 0
    cmd = pip_command(python, staging, requirements, constraints, wheelhouse, extra=extra)
    log("$ " + " ".join(cmd))
    return _run(cmd, log, canceled)


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
    have = interpreter_pins(python)
    requirements = list(requirements or install_requirements(pins))
    rc = 1
    for strict in (True, False):
        constraints = target.parent / f"constraints-{target.name}.txt"
        constraints.write_text(constraints_text(pins, strict), encoding="utf-8")
        if not strict:
            log("retrying with only numpy and our own packages pinned")
        rc = _pip(python, staging, requirements, constraints, wheelhouse, have, log, canceled)
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


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}


def _run(cmd: list[str], log: Callable[[str], None], canceled: Callable[[], bool]) -> int:
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=_clean_env()) as proc:
        for line in proc.stdout:  # the with block closes the pipe (no ResourceWarning) and reaps pip
            log(line.rstrip())
            if canceled():
                proc.terminate()
                break
        return proc.wait()
