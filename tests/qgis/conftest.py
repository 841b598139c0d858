"""Headless PyQGIS fixtures: a real QgsApplication with Processing, a real minimal iface, the plugin.

Everything here is skipped (not failed) when the QGIS Python bindings are not importable.
Run with ``QT_QPA_PLATFORM=offscreen``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

HAVE_QGIS = importlib.util.find_spec("qgis") is not None and importlib.util.find_spec("qgis.core") is not None
if not HAVE_QGIS:
    collect_ignore_glob = ["test_*.py"]

SCENE = "rgbn_5m.tif"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.qgis)


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """One QgsApplication for the session, with its settings and profile in a temporary folder."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication, QSettings

    root = tmp_path_factory.mktemp("qgis_profile")
    QCoreApplication.setOrganizationName("rsclip-geo-tests")
    QCoreApplication.setApplicationName("qgis-tests")
    QSettings.setDefaultFormat(QSettings.IniFormat)
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(root / "settings"))
    app = QgsApplication([], False, str(root / "profile"))
    app.initQgis()
    plugins = Path(QgsApplication.pkgDataPath()) / "python" / "plugins"
    if str(plugins) not in sys.path:
        sys.path.append(str(plugins))
    from processing.core.Processing import Processing

    Processing.initialize()
    yield app
    app.exitQgis()


@pytest.fixture
def iface(qgis_app):
    """A fresh main window per test, deleted by Qt (deleteLater), not by Python's garbage collector."""
    from qgis.core import QgsApplication

    from tests.qgis.helpers import Iface

    iface = Iface()
    yield iface
    iface.close()
    QgsApplication.processEvents()


@pytest.fixture
def project(qgis_app):
    from qgis.core import QgsProject

    QgsProject.instance().clear()
    yield QgsProject.instance()
    QgsProject.instance().clear()


@pytest.fixture
def scene_path(shared_data, tmp_path) -> Path:
    """A private copy of a real scene: its index (a sidecar file) must not go into the shared folder."""
    src = shared_data / "scenes" / SCENE
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return Path(shutil.copy(src, tmp_path / SCENE))


@pytest.fixture
def scene_layer(project, scene_path):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(scene_path), "rgbn", "gdal")
    assert layer.isValid()
    project.addMapLayer(layer)
    return layer


@pytest.fixture
def plugin_settings(qgis_app, tiny_bundle, tmp_path):
    """The plugin's settings: the tiny real test bundle on CPU, 160 m (32 px) tiles, outputs in tmp_path."""
    from qgis_plugin.settings import Settings

    s = Settings(model_source="folder", model_folder=str(tiny_bundle), device="cpu", batch_size=64,
                 tile_size_m=160.0, top=5, output_folder=str(tmp_path / "runs"))
    s.save()
    return s


@pytest.fixture(scope="module")
def provider(qgis_app):
    """Our Processing provider registered for one test module (the plugin's initProcessing does it in QGIS)."""
    from qgis.core import QgsApplication

    from qgis_plugin.processing.provider import RsclipProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("rsclipgeo") is None:
        registry.addProvider(RsclipProvider())
    yield registry.providerById("rsclipgeo")
    registry.removeProvider("rsclipgeo")
