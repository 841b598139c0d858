"""Runtime dependencies of the plugin: what they are, where they live, whether they are met, diagnostics.

QGIS ships its own Python. We never change what it has: missing packages go into
a folder the plugin owns (``<QGIS profile>/python/rsclip_geo_deps/py3XY``, filled
by installer.py), appended to ``sys.path`` of the worker process so QGIS's own
packages win. This module imports neither qgis at module level nor any of the
packages it checks, so it works before they exist (also as a plain module of
worker.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# (import name, distribution, pip requirement). Kept equal to pyproject's runtime
# dependencies minus the CLI-only click/tqdm (tests/qgis/test_deps.py checks it).
REQUIREMENTS: tuple[tuple[str, str, str], ...] = (
    ("numpy", "numpy", "numpy>=1.23,<2"),
    ("onnxruntime", "onnxruntime", "onnxruntime>=1.17"),
    ("rasterio", "rasterio", "rasterio>=1.3"),
    ("affine", "affine", "affine>=3"),  # the core uses Affine @ (x, y)
    ("geopandas", "geopandas", "geopandas>=0.14"),
    ("shapely", "shapely", "shapely>=2.0"),
    ("pyproj", "pyproj", "pyproj>=3.4"),
    ("pyogrio", "pyogrio", "pyogrio>=0.7"),
    ("pyarrow", "pyarrow", "pyarrow>=12,<21"),
    ("PIL", "pillow", "pillow>=9"),
    ("tokenizers", "tokenizers", "tokenizers>=0.15"),
    ("ftfy", "ftfy", "ftfy>=6.1"),
    ("regex", "regex", "regex>=2023.0"),
    ("scipy", "scipy", "scipy>=1.10"),  # the core's `segment` (QGIS's Python usually has it: then reused)
)
DEPS_FOLDER = "rsclip_geo_deps"
VENDOR_FOLDER = Path(__file__).resolve().parent / "vendor"  # the zipped plugin's copy of the rsclip_geo core
# Packages QGIS's own Python may hold in a version too old for our dependencies, so ours must win
# for them: affine 3 (the core uses its ``@`` operator) puts functools.cached_property on attrs
# slotted classes, which needs attrs >= 23.2; Debian 12's QGIS Python has attrs 22.2.
# (module names, distribution, requirement)
NEWER_THAN_QGIS: tuple[tuple[tuple[str, ...], str, str], ...] = ((("attr", "attrs"), "attrs", "attrs>=23.2"),)


@dataclass(frozen=True)
class Problem:
    """A requirement that is not met: missing, or present in a version outside the range."""

    requirement: str
    found: str | None  # installed version, None when missing
    location: str = ""

    def describe(self) -> str:
        if self.found is None:
            return f"{self.requirement}: not installed"
        return f"{self.requirement}: found {self.found} ({self.location or 'unknown location'})"


def deps_dir(settings_dir: str | os.PathLike | None = None) -> Path:
    """``<profile>/python/rsclip_geo_deps/py3XY``: one folder per Python minor version (compiled wheels)."""
    if settings_dir is None:
        from qgis.core import QgsApplication

        settings_dir = QgsApplication.qgisSettingsDirPath()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(settings_dir) / "python" / DEPS_FOLDER / tag


def add_vendor() -> None:
    """The zipped plugin's own copy of the core comes first: the plugin runs the core it was tested with."""
    if VENDOR_FOLDER.is_dir() and str(VENDOR_FOLDER) not in sys.path:
        sys.path.insert(0, str(VENDOR_FOLDER))


def add_paths(folder: Path | None = None) -> None:
    """The vendored core first, our deps folder last (QGIS's packages win); ``folder`` defaults to
    the QGIS profile's. Exception: a NEWER_THAN_QGIS package that QGIS holds too old comes from ours."""
    add_vendor()
    if folder is None:
        try:
            folder = deps_dir()
        except Exception:  # no QgsApplication (plain Python): nothing of ours to add
            return
    finish_pending(folder)
    if not folder.is_dir():
        return
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
        importlib.invalidate_caches()
    for modules, dist, req in NEWER_THAN_QGIS:
        _prefer_ours(folder, modules, dist, req)


def _folder_version(folder: Path, dist: str) -> str | None:
    found = sorted(folder.glob(f"{dist}-*.dist-info"))
    return found[-1].name[len(dist) + 1:-len(".dist-info")] if found else None


def _prefer_ours(folder: Path, modules: Sequence[str], dist: str, req: str) -> None:
    if any(m in sys.modules for m in modules):
        return  # already imported (by QGIS or another plugin): check() reports it if too old
    theirs, _ = _installed(dist)
    ours = _folder_version(folder, dist)
    if theirs is None or satisfies(theirs, req) or ours is None or not satisfies(ours, req):
        return
    sys.path.insert(0, str(folder))
    try:
        for m in modules:
            importlib.import_module(m)
    finally:
        sys.path.remove(str(folder))  # the first occurrence: the one just inserted


def _loaded_version(module: str, dist: str) -> tuple[str | None, str]:
    """Version of the copy of ``module`` Python would use (metadata alone finds the first on sys.path)."""
    mod = sys.modules.get(module)
    spec = None if mod else importlib.util.find_spec(module)
    origin = getattr(mod, "__file__", None) if mod else (spec.origin if spec else None)
    if not origin:
        return None, ""
    site = Path(origin).resolve().parent.parent
    version = _folder_version(site, dist)
    return (version, str(site)) if version else _installed(dist)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def satisfies(version: str, requirement: str) -> bool:
    """Enough of PEP 440 for our own ranges: '>=1.23,<2' style clauses on release numbers."""
    spec = requirement[len(re.match(r"[A-Za-z0-9_.\-]+", requirement).group()):]
    have = _version_tuple(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, want = re.match(r"(>=|<=|==|!=|>|<)\s*(.+)", clause).groups()
        w = _version_tuple(want)
        n = max(len(have), len(w))
        a, b = have + (0,) * (n - len(have)), w + (0,) * (n - len(w))
        ok = {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, ">": a > b, "<": a < b}[op]
        if not ok:
            return False
    return True


def _installed(dist: str) -> tuple[str | None, str]:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None, ""
    return d.version, str(getattr(d, "_path", "")) or ""


def _first_dist(dist: str, search: list[str]):
    return next(iter(md.distributions(name=dist, path=search)), None)


def check(requirements: Sequence[tuple[str, str, str]] | None = None, folder: Path | None = None) -> list[Problem]:
    """Unmet requirements as the worker process will see them: ``sys.path`` with ``folder`` (our
    deps folder) appended. Reads installed metadata only: nothing is imported, sys.path is unchanged."""
    requirements = REQUIREMENTS if requirements is None else requirements
    base = list(sys.path)
    search = base + ([str(folder)] if folder is not None and str(folder) not in base else [])
    problems = []
    for module, dist, req in requirements:
        d = _first_dist(dist, search)
        if d is None or importlib.machinery.PathFinder.find_spec(module, search) is None:
            problems.append(Problem(req, None))
        elif not satisfies(d.version, req):
            problems.append(Problem(req, d.version, str(getattr(d, "_path", ""))))
    for modules, dist, req in NEWER_THAN_QGIS:
        version, where = _effective_version(modules[0], dist, req, folder)
        if version is not None and not satisfies(version, req):
            problems.append(Problem(req, version, where))
    return problems


def _effective_version(module: str, dist: str, req: str, folder: Path | None) -> tuple[str | None, str]:
    """The copy the worker imports: QGIS's, unless it is too old and ours is good (see add_paths)."""
    if module in sys.modules:
        return _loaded_version(module, dist)
    theirs = _first_dist(dist, list(sys.path))
    ours = _folder_version(folder, dist) if folder is not None and folder.is_dir() else None
    if theirs is not None and satisfies(theirs.version, req):
        return theirs.version, str(getattr(theirs, "_path", ""))
    if ours is not None:
        return ours, str(folder)
    return (theirs.version, str(getattr(theirs, "_path", ""))) if theirs is not None else (None, "")


def core_missing() -> str | None:
    """Why the rsclip_geo core cannot be found (vendored or installed), without importing it."""
    if (VENDOR_FOLDER / "rsclip_geo" / "__init__.py").is_file() or importlib.util.find_spec("rsclip_geo"):
        return None
    return f"the rsclip_geo package is neither vendored ({VENDOR_FOLDER}) nor installed"


def core_problem() -> str | None:
    """Why the rsclip_geo core cannot be imported (None when it can)."""
    try:
        importlib.import_module("rsclip_geo")
    except Exception as exc:  # any import-time failure means the plugin cannot run
        return f"{type(exc).__name__}: {exc}"
    return None


# ---- installing ---------------------------------------------------------------
def python_executable() -> Path:
    """The interpreter QGIS runs on: the one in ``sys.exec_prefix`` (inside the desktop app
    ``sys.executable`` is the QGIS binary, or whatever ``python3`` is first on PATH, e.g. a pyenv shim)."""
    prefixes = {Path(sys.exec_prefix).resolve(), Path(sys.prefix).resolve()}
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and any(p in exe.absolute().parents for p in prefixes):
        return exe  # a plain interpreter or a venv's (not resolved: a venv's python is a symlink)
    major, minor = sys.version_info[:2]
    prefix = Path(sys.exec_prefix)
    candidates = [prefix / "python.exe", prefix / "python3.exe",  # Windows (OSGeo4W, standalone installer)
                  prefix / "bin" / f"python{major}.{minor}", prefix / "bin" / f"python{major}",  # Linux, macOS
                  Path(f"/usr/bin/python{major}.{minor}")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"cannot find QGIS's Python interpreter (looked for {', '.join(map(str, candidates))}); "
        "install the dependencies by hand, see the plugin's README")


COMPLETE_MARK = ".rsclip-install-complete"  # written into <target>.new once pip has succeeded


def finish_pending(target: Path) -> bool:
    """Swap a completed ``<target>.new`` in (never one pip is still filling: it has no COMPLETE_MARK);
    False when the old folder is locked (Windows: loaded DLLs), to be retried at the next start."""
    staging = target.with_name(target.name + ".new")
    if not (staging / COMPLETE_MARK).is_file():
        return not staging.is_dir()
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        if target.exists():
            target.rename(old)
        staging.rename(target)
    except OSError:
        if old.exists() and not target.exists():
            old.rename(target)
        return False
    shutil.rmtree(old, ignore_errors=True)
    return True


# ---- diagnostics ----------------------------------------------------------------
def _try(fn: Callable[[], str]) -> str:
    try:
        return fn()
    except Exception as exc:  # a diagnostics line must never raise
        return f"unavailable ({type(exc).__name__}: {exc})"


def _gpu() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "no NVIDIA GPU found (nvidia-smi not available)"
    return out.stdout.strip() or f"nvidia-smi failed: {out.stderr.strip()}"


def qgis_report() -> str:
    """The QGIS side of the diagnostics (this process): QGIS, its GDAL, the worker's interpreter, folders."""
    def qgis_version():
        from qgis.core import Qgis
        return Qgis.QGIS_VERSION

    def qgis_gdal():
        from osgeo import gdal
        return gdal.__version__

    folder = _try(lambda: str(deps_dir()))
    problems = _try(lambda: "; ".join(p.describe() for p in check(folder=deps_dir())) or "all met")
    return "\n".join([f"QGIS: {_try(qgis_version)}", f"GDAL (QGIS): {_try(qgis_gdal)}",
                      f"worker Python: {_try(lambda: str(python_executable()))}",
                      f"dependency folder: {folder}", f"requirements (metadata): {problems}"])


def runtime_report() -> str:
    """The worker side (run it in the worker process): the packages the core really imports."""
    def ort():
        import onnxruntime as rt
        return f"{rt.__version__}; providers: {', '.join(rt.get_available_providers())}"

    def rio():
        import rasterio
        from rasterio.env import GDALVersion
        return f"{rasterio.__version__} (GDAL {rasterio.__gdal_version__}, runtime {GDALVersion.runtime()})"

    def core():
        import rsclip_geo
        return f"{rsclip_geo.__version__} from {Path(rsclip_geo.__file__).parent}"

    def geos():
        import shapely
        return f"{shapely.__version__} (GEOS {shapely.geos_version_string})"

    return "\n".join([f"Python: {sys.version.split()[0]} ({sys.executable})", f"rasterio: {_try(rio)}",
                      f"shapely: {_try(geos)}", f"onnxruntime: {_try(ort)}", f"rsclip_geo core: {_try(core)}",
                      f"GPU: {_gpu()}"])


def diagnostics() -> str:
    """Both sides in one process (tests, a plain Python); the plugin asks the worker for runtime_report."""
    return qgis_report() + "\n" + runtime_report()
