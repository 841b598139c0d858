"""Issue 14, defects 3-5: model errors that lead somewhere in QGIS, pulled models listed, the way back to the
installer from a missing-module error, and an installer that is done when it is done."""

from __future__ import annotations

import json
import time

import pytest

from tests.qgis.helpers import run_task


def _wait(condition, seconds=60):
    from qgis.core import QgsApplication

    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:  # finished() arrives through the event loop
        QgsApplication.processEvents()
        time.sleep(0.02)
    assert condition(), f"not done within {seconds} s"


@pytest.fixture
def plugin(iface, plugin_settings):
    import qgis_plugin

    p = qgis_plugin.classFactory(iface)
    p.initGui()
    yield p
    p.unload()


def test_an_unknown_model_points_to_the_settings_not_to_a_cli(scene_layer, project, plugin_settings):
    from qgis_plugin.runs import ClassifyParams
    from qgis_plugin.sources import run_params
    from qgis_plugin.tasks import ClassifyTask

    plugin_settings.model_source, plugin_settings.model_name = "pulled", "no-such-model"
    ok, result = run_task(ClassifyTask(run_params(ClassifyParams, scene_layer, plugin_settings, labels="red")))
    assert ok is False and result.message.startswith("no-such-model: ")
    assert "rsclip-geo's Settings..." in result.message and "pulled models listed there" in result.message
    assert "`rsclip-geo" not in result.message and "--model" not in result.message  # the ZIP ships no CLI


@pytest.mark.parametrize("env", [{"RSCLIP_GEO_CACHE": "{tmp}/cache"}, {"XDG_CACHE_HOME": "{tmp}/xdg"}, {}])
def test_pulled_models_folder_is_the_core_s(env, monkeypatch, tmp_path):
    from rsclip_geo.runtime.paths import pulled_models_dir as core_dir

    from qgis_plugin.settings import pulled_models_dir

    for key in ("RSCLIP_GEO_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pulled_models_dir() == core_dir()


def test_settings_list_the_pulled_models(qgis_app, tmp_path, monkeypatch):
    from qgis_plugin.settings import Settings
    from qgis_plugin.ui.settings_dialog import SettingsDialog

    monkeypatch.setenv("RSCLIP_GEO_CACHE", str(tmp_path / "cache"))
    for name, bundle in (("remoteclip-vit-b-32", True), ("half-pulled", False)):
        (tmp_path / "cache" / "models" / name).mkdir(parents=True)
        if bundle:
            (tmp_path / "cache" / "models" / name / "model.json").write_text(json.dumps({"name": name}))
    dialog = SettingsDialog(settings=Settings())
    assert [dialog.pulled.itemText(i) for i in range(dialog.pulled.count())] == ["remoteclip-vit-b-32"]
    assert str(tmp_path / "cache" / "models") in dialog.pulled.toolTip()


def test_menu_offers_check_and_repair(plugin, iface):
    menu = [a.text() for a in iface.raster_menu_actions("&rsclip-geo")]
    assert "Check / repair dependencies..." in menu
    task = plugin.check_dependencies()
    assert task is not None
    _wait(lambda: getattr(plugin, "install_dialog", None) is not None)
    dialog = plugin.install_dialog
    assert "All dependencies are met" in dialog.intro.text()  # the worker imported everything
    assert dialog.install_button.text() == "Reinstall (repair)" and dialog.install_button.isEnabled()
    dialog.close()


def test_a_missing_module_error_offers_the_repair(plugin, iface, scene_layer, plugin_settings):
    from qgis.gui import QgsMessageBarItem
    from qgis.PyQt import sip
    from qgis.PyQt.QtWidgets import QPushButton

    from qgis_plugin.runs import SearchParams
    from qgis_plugin.sources import run_params
    from qgis_plugin.tasks import RunResult

    params = run_params(SearchParams, scene_layer, plugin_settings, query="x")
    failed = RunResult("search", params, ok=False, group="Search: 'x' (rgbn)",
                       message="ModuleNotFoundError: No module named 'onnxruntime'")
    plugin.done(failed)
    item = sip.cast(iface.messageBar().currentItem(), QgsMessageBarItem)
    assert item.text() == "Search: 'x' (rgbn): ModuleNotFoundError: No module named 'onnxruntime'"
    (button,) = [b for b in item.findChildren(QPushButton) if b.text() == "Check / repair dependencies..."]
    button.click()
    _wait(lambda: getattr(plugin, "install_dialog", None) is not None)
    plugin.install_dialog.close()
    # an ordinary error gets no such button
    plugin.done(RunResult("search", params, ok=False, group="g", message="band 9 does not exist"))
    item = sip.cast(iface.messageBar().currentItem(), QgsMessageBarItem)
    assert not [b for b in item.findChildren(QPushButton) if "repair" in b.text()]


def test_after_a_successful_install_the_warning_goes_and_install_is_disabled(iface, qgis_app):
    from qgis_plugin.deps import Problem
    from qgis_plugin.installer_plugin import InstallerPlugin

    p = InstallerPlugin(iface, [Problem("onnxruntime>=1.17", None)])
    p.initGui()
    bar = iface.messageBar()
    assert bar.currentItem() is p.bar_item and "needs Python packages" in p.bar_item.text()
    dialog = p.make_dialog()
    assert "onnxruntime>=1.17: not installed" in dialog.intro.text()
    assert dialog.install_button.isEnabled() and dialog.install_button.text() == "Install dependencies"
    dialog.done_message(False)  # a failed pip: try again
    assert dialog.install_button.isEnabled() and p.bar_item is not None
    dialog.done_message(True)  # what the install task's taskCompleted calls
    assert not dialog.install_button.isEnabled()
    assert p.bar_item is None and "restart QGIS" in bar.currentItem().text()
    p.unload()
