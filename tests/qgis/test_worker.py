"""The worker process protocol: the QGIS process never imports the native wheels (see qgis_plugin/runs.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from qgis_plugin import worker_client
from qgis_plugin.runs import IndexParams, SearchParams
from qgis_plugin.tasks import run_in_worker

REPO = Path(__file__).resolve().parents[2]


def test_check_command_reports_a_complete_environment():
    answer = worker_client.call({"command": "check"})
    assert answer["ok"] and answer["result"] == {"problems": [], "core": None}


def test_unknown_command_and_dead_interpreter_are_clear_failures(tmp_path):
    answer = worker_client.call({"command": "fly"})
    assert answer["ok"] is False and "unknown worker command 'fly'" in answer["error"]
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    broken.chmod(0o755)
    try:
        worker_client.call({"command": "check"}, python=broken)
    except worker_client.WorkerError as exc:
        assert "exited with code 3" in str(exc) and "boom" in str(exc)
    else:
        raise AssertionError("a worker that dies must raise WorkerError")


def test_core_error_message_comes_back_unchanged(tmp_path, tiny_bundle):
    answer = run_in_worker("search", SearchParams(scene=str(tmp_path / "missing.tif"), query="red",
                                                  model=str(tiny_bundle), device="cpu"),
                           lambda d, t: None, lambda: False)
    assert answer["ok"] is False and not answer["canceled"]
    assert answer["error"] == f"{tmp_path / 'missing.tif'}: file does not exist"


def test_index_output_aimed_at_the_scene_is_refused(tmp_path, tiny_bundle):
    """Processing's 'Build index' output may name any file; written with overwrite, the scene itself was lost."""
    from tests.utils.rasters import RED, colour_blocks, write_geotiff

    scene = write_geotiff(tmp_path / "scene.tif", colour_blocks([[RED, RED]], 32))
    before = scene.read_bytes()
    answer = run_in_worker("index", IndexParams(scene=str(scene), output=str(scene), model=str(tiny_bundle),
                                                device="cpu"), lambda d, t: None, lambda: False)
    assert answer["ok"] is False and "refusing to write over an input" in answer["error"], answer
    assert scene.read_bytes() == before


def test_layers_palette_is_the_core_palette():
    from rsclip_geo.outputs.writers import PALETTE

    from qgis_plugin.layers import PALETTE as PLUGIN_PALETTE

    assert PLUGIN_PALETTE == PALETTE


def test_qgis_process_never_imports_the_wheels(tmp_path, tiny_bundle, shared_data):
    """A fresh process: load the plugin, run a search through its task, add the layers; the native
    wheels (rasterio, shapely, pyogrio, onnxruntime) and torch stay out of the QGIS process."""
    script = textwrap.dedent(f"""
        import shutil, sys
        sys.path.insert(0, {str(REPO)!r})
        from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
        app = QgsApplication([], False, {str(tmp_path / 'profile')!r}); app.initQgis()
        from tests.qgis.helpers import Iface, run_task
        import qgis_plugin
        from qgis_plugin.runs import IndexParams, SearchParams
        from qgis_plugin.sources import raster_file
        from qgis_plugin.tasks import SearchTask
        iface = Iface()
        plugin = qgis_plugin.classFactory(iface); plugin.initGui()
        scene = shutil.copy({str(shared_data / 'scenes' / 'rgbn_5m.tif')!r}, {str(tmp_path)!r})
        layer = QgsRasterLayer(scene, "scene", "gdal"); QgsProject.instance().addMapLayer(layer)
        ok, result = run_task(SearchTask(SearchParams(scene=raster_file(layer), query="red", model={str(tiny_bundle)!r},
                                                      device="cpu", tile_size_px=64, top=3,
                                                      crs_wkt=layer.crs().toWkt())))
        assert ok and len(result.layers) == 2, result.message
        loaded = sorted(m for m in ("rasterio", "shapely", "pyogrio", "onnxruntime", "geopandas", "pyarrow",
                                    "torch", "rsclip_geo") if m in sys.modules)
        print("LOADED", loaded)
        plugin.unload(); app.exitQgis()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout
