"""Build the installable plugin zip: ``python -m qgis_plugin.build_zip [-o dist/...zip]``.

Layout (what QGIS's "Install from ZIP" and the plugin repository expect)::

    rsclip_geo_qgis/            the plugin package (this folder, minus this script)
        metadata.txt  icon.png  requirements.txt
        vendor/rsclip_geo/      the runtime core, vendored: no export/ (torch), no cli/ (click)

The core is vendored rather than pip-installed because then the plugin always
runs the exact core it was tested with, and the installer only has to fetch
third-party wheels (from PyPI, or offline from a folder of wheels): rsclip-geo
itself need not be on any index. Timestamps are fixed, so the zip is reproducible.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "qgis_plugin"
CORE_SRC = REPO / "rsclip_geo"
PLUGIN_DIR = "rsclip_geo_qgis"
CORE_EXCLUDE = ("export", "cli", "data/parity")  # torch-only export, click CLI, export parity images
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
PLUGIN_EXCLUDE = {"build_zip.py"}
FIXED_TIME = (2024, 1, 1, 0, 0, 0)
MAX_MODEL_MB = 60.0


def _files(root: Path, exclude: tuple[str, ...] = ()):
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SKIP_PARTS & set(rel.parts) or path.suffix in SKIP_SUFFIXES:
            continue
        if any(rel.as_posix() == e or rel.as_posix().startswith(e + "/") for e in exclude):
            continue
        yield path, rel


def check_metadata(path: Path) -> configparser.ConfigParser:
    """metadata.txt must have QGIS's mandatory keys and the core's version."""
    meta = configparser.ConfigParser()
    meta.read(path, encoding="utf-8")
    required = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
    missing = [k for k in required if not meta.has_option("general", k)]
    if missing:
        raise SystemExit(f"{path}: [general] lacks {', '.join(missing)}")
    core_version = re.search(r'__version__ = "([^"]+)"', (CORE_SRC / "__init__.py").read_text()).group(1)
    if meta.get("general", "version") != core_version:
        raise SystemExit(f"{path}: version {meta.get('general', 'version')} != rsclip_geo {core_version}")
    return meta


def requirements_text() -> str:
    sys.path.insert(0, str(REPO))
    from qgis_plugin.deps import REQUIREMENTS

    return "".join(f"{req}\n" for _, _, req in REQUIREMENTS)


def build(output: Path, with_model: bool = True) -> Path:
    check_metadata(REPO / "metadata.txt")
    exclude = CORE_EXCLUDE
    model_dir = CORE_SRC / "models"
    if model_dir.is_dir():
        size_mb = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) / 2**20
        if not with_model or size_mb > MAX_MODEL_MB:
            exclude = exclude + ("models",)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")

    def add(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
        info = zipfile.ZipInfo(arcname, FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)

    with zipfile.ZipFile(tmp, "w") as zf:
        for path, rel in _files(PLUGIN_SRC):
            if rel.as_posix() not in PLUGIN_EXCLUDE:
                add(zf, f"{PLUGIN_DIR}/{rel.as_posix()}", path.read_bytes())
        add(zf, f"{PLUGIN_DIR}/metadata.txt", (REPO / "metadata.txt").read_bytes())
        add(zf, f"{PLUGIN_DIR}/requirements.txt", requirements_text().encode())
        for name in ("LICENSE", "NOTICE"):
            if (REPO / name).is_file():
                add(zf, f"{PLUGIN_DIR}/{name}", (REPO / name).read_bytes())
        for path, rel in _files(CORE_SRC, exclude):
            add(zf, f"{PLUGIN_DIR}/vendor/rsclip_geo/{rel.as_posix()}", path.read_bytes())
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="zip path (default: dist/rsclip_geo_qgis-VERSION.zip)")
    parser.add_argument("--no-model", action="store_true", help="leave the shipped default model out")
    args = parser.parse_args(argv)
    version = check_metadata(REPO / "metadata.txt").get("general", "version")
    out = build(args.output or REPO / "dist" / f"{PLUGIN_DIR}-{version}.zip", with_model=not args.no_model)
    sys.stdout.write(f"{out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
