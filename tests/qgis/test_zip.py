"""The plugin zip: QGIS's layout, metadata, the vendored core, and a plugin that loads from it."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_zip_layout_and_metadata(tmp_path):
    from qgis_plugin.build_zip import build

    out = build(tmp_path / "plugin.zip")
    names = zipfile.ZipFile(out).namelist()
    assert all(n.startswith("rsclip_geo_qgis/") for n in names) and len(names) == len(set(names))
    for required in ("__init__.py", "metadata.txt", "icon.png", "plugin.py", "tasks.py", "layers.py", "deps.py",
                     "settings.py", "processing/provider.py", "ui/install_dialog.py", "requirements.txt",
                     "vendor/rsclip_geo/__init__.py", "vendor/rsclip_geo/tasks/heatmap.py", "vendor/rsclip_geo/tasks/count.py",
                     "vendor/rsclip_geo/data/bpe_simple_vocab_16e6.txt.gz"):
        assert f"rsclip_geo_qgis/{required}" in names, required
    assert not [n for n in names if "/export/" in n or "/cli/" in n or "__pycache__" in n or "build_zip" in n]
    meta = configparser.ConfigParser()
    meta.read_string(zipfile.ZipFile(out).read("rsclip_geo_qgis/metadata.txt").decode())
    g = meta["general"]
    assert (g["name"], g["qgisMinimumVersion"], g["version"], g["experimental"]) == ("rsclip-geo", "3.22", "0.1.0",
                                                                                   "True")
    assert g["icon"] == "icon.png" and g["tracker"] and g["homepage"] and g["tags"]
    assert build(tmp_path / "again.zip").read_bytes() == out.read_bytes()  # reproducible


def test_unzipped_plugin_loads_its_vendored_core(tmp_path):
    """Unzip like QGIS does and import the plugin package in a fresh interpreter: it must use its own
    vendored core, never the repository's, and import every module the actions need (no torch)."""
    from qgis_plugin.build_zip import build

    zipfile.ZipFile(build(tmp_path / "plugin.zip")).extractall(tmp_path / "plugins")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import rsclip_geo_qgis.deps as d; d.add_paths(); import rsclip_geo, rsclip_geo.tasks.classify,"
        " rsclip_geo.tasks.search, rsclip_geo.tasks.heatmap, rsclip_geo.tasks.count, rsclip_geo.tasks.audit.run,"
        " rsclip_geo.embeddings.index;"
        "import rsclip_geo_qgis.tasks, rsclip_geo_qgis.layers, rsclip_geo_qgis.processing.provider;"
        "print(rsclip_geo.__file__); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "plugins")], capture_output=True, text=True,
                         cwd=tmp_path, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    path, torch = out.stdout.split()
    assert Path(path).is_relative_to(tmp_path / "plugins" / "rsclip_geo_qgis" / "vendor")
    assert torch == "False"
