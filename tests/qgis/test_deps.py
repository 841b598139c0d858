"""Dependency check (deps.py), constraints and the pip installer (installer.py; offline, from a real wheel)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qgis_plugin import deps, installer

REPO = Path(__file__).resolve().parents[2]


def _name(req: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", req).group().lower()


def test_requirements_follow_pyproject():
    """The installer installs what the core needs: pyproject's runtime dependencies minus the CLI's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]} - {"click", "tqdm"}
    installed = {dist for _, dist, _ in deps.REQUIREMENTS} | {dist for _, dist, _ in deps.NEWER_THAN_QGIS}
    assert installed == core


def test_everything_is_met_in_this_environment(qgis_app):
    assert deps.check() == []
    assert deps.core_problem() is None


def test_missing_and_too_old_are_reported():
    problems = deps.check([("no_such_module_xyz", "no-such-dist-xyz", "no-such-dist-xyz>=1"),
                           ("numpy", "numpy", "numpy>=99")])
    assert [p.requirement for p in problems] == ["no-such-dist-xyz>=1", "numpy>=99"]
    assert problems[0].found is None and "not installed" in problems[0].describe()
    assert problems[1].found and problems[1].found.startswith("1.")


@pytest.mark.parametrize("version,req,ok", [
    ("1.26.4", "numpy>=1.23,<2", True), ("2.0.1", "numpy>=1.23,<2", False), ("1.22.0", "numpy>=1.23,<2", False),
    ("20.0.0", "pyarrow>=12,<21", True), ("21.0", "pyarrow>=12,<21", False), ("2023.12.25", "regex>=2023.0", True),
    ("3.0.1", "affine>=3", True), ("2.4.0", "affine>=3", False), ("1.17.0rc1", "onnxruntime>=1.17", True),
])
def test_satisfies(version, req, ok):
    assert deps.satisfies(version, req) is ok


def test_constraints_never_move_qgis_packages():
    pins = {"numpy": "1.24.2", "pyproj": "3.4.1", "attrs": "22.2.0", "lxml": "4.9.2"}
    strict = installer.constraints_text(pins, strict=True).splitlines()
    assert "numpy==1.24.2" in strict and "pyproj==3.4.1" in strict and "lxml==4.9.2" in strict
    assert "numpy<2" not in strict  # QGIS has a numpy: exactly that one
    assert not any(line.startswith("attrs") for line in strict)  # too old for affine 3: ours is installed
    assert installer.install_requirements(pins)[-1] == "attrs>=23.2"
    loose = installer.constraints_text(pins, strict=False).splitlines()
    assert "lxml==4.9.2" not in loose and "numpy==1.24.2" in loose
    assert "numpy<2" in installer.constraints_text({}, strict=True).splitlines()
    assert installer.install_requirements({"attrs": "24.1.0"}) == [r[2] for r in deps.REQUIREMENTS]


def test_pip_command_targets_our_folder_only(tmp_path):
    cmd = installer.pip_command(Path("/usr/bin/python3"), tmp_path / "t", ["rasterio>=1.3"], tmp_path / "c.txt",
                           wheelhouse=tmp_path / "wheels")
    assert cmd[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "t")
    assert cmd[cmd.index("-c") + 1] == str(tmp_path / "c.txt")
    assert "--no-index" in cmd and cmd[cmd.index("--find-links") + 1] == str(tmp_path / "wheels")
    assert "--only-binary" in cmd and cmd[-1] == "rasterio>=1.3"
    assert "--user" not in cmd and "--break-system-packages" not in cmd


def test_python_executable_is_this_interpreter_outside_qgis():
    assert deps.python_executable() == Path(sys.executable)


def _wheel(tmp_path: Path) -> Path:
    """A real one-module wheel, built offline."""
    src = tmp_path / "src"
    (src / "rsclip_dummy_dep").mkdir(parents=True)
    (src / "rsclip_dummy_dep" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "rsclip-dummy-dep"\nversion = "1.0"\n')
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(wheels), str(src)], check=True, capture_output=True)
    return wheels


def test_offline_install_into_a_fresh_folder_and_swap(tmp_path):
    wheels = _wheel(tmp_path)
    target = tmp_path / "rsclip_geo_deps" / "py3x"
    (target / "stale_module").mkdir(parents=True)  # a previous install: replaced as a whole
    lines: list[str] = []
    rc = installer.install(target, requirements=["rsclip-dummy-dep==1.0"], wheelhouse=wheels, log=lines.append)
    assert rc == 0, "\n".join(lines)
    assert (target / "rsclip_dummy_dep" / "__init__.py").is_file() and not (target / "stale_module").exists()
    assert not target.with_name("py3x.new").exists() and not target.with_name("py3x.old").exists()
    constraints = (target.parent / "constraints-py3x.txt").read_text()
    assert "numpy==" in constraints  # this Python's own numpy is pinned, never replaced
    assert any("--target" in line for line in lines)
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.append({str(target)!r}); "
                          "import rsclip_dummy_dep; print(rsclip_dummy_dep.VALUE)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"


def test_failed_install_keeps_the_working_folder(tmp_path):
    target = tmp_path / "deps" / "py3x"
    (target / "good").mkdir(parents=True)
    (tmp_path / "empty_wheels").mkdir()
    rc = installer.install(target, requirements=["rsclip-not-there==9"], wheelhouse=tmp_path / "empty_wheels")
    assert rc != 0 and (target / "good").is_dir() and not target.with_name("py3x.new").exists()


def test_add_paths_appends_after_qgis_packages(tmp_path, monkeypatch):
    folder = tmp_path / "d"
    folder.mkdir()
    monkeypatch.setattr(sys, "path", list(sys.path))
    deps.add_paths(folder)
    assert sys.path[-1] == str(folder)


def test_diagnostics_report(qgis_app):
    text = deps.diagnostics()
    for key in ("Python:", "QGIS: 3.", "GDAL (QGIS):", "rasterio:", "onnxruntime:", "providers:", "GPU:",
                "requirements (metadata): all met", "worker Python:", "runtime"):
        assert key in text


def test_a_half_filled_staging_folder_is_never_swapped_in(tmp_path):
    target = tmp_path / "py3x"
    (target / "good").mkdir(parents=True)
    staging = tmp_path / "py3x.new"
    (staging / "half").mkdir(parents=True)
    assert deps.finish_pending(target) is False and (target / "good").is_dir()  # pip still working
    (staging / deps.COMPLETE_MARK).touch()
    assert deps.finish_pending(target) is True
    assert (target / "half").is_dir() and not staging.exists() and not (tmp_path / "py3x.old").exists()


def test_select_installs_leaves_out_what_qgis_python_has():
    """Debian 12's QGIS Python: numpy 1.24.2, pyproj 3.4.1, pillow 9.4.0 (reused), attrs 22.2.0 (too old)."""
    have = {"numpy": "1.24.2", "pyproj": "3.4.1", "pillow": "9.4.0", "attrs": "22.2.0", "six": "1.16.0"}
    resolved = [("numpy", "1.24.2"), ("pyproj", "3.4.1"), ("Pillow", "9.4.0"), ("attrs", "26.1.0"),
                ("rasterio", "1.4.4"), ("six", "1.17.0"), ("onnxruntime", "1.32.0")]
    install, reuse = installer.select_installs(resolved, have)
    assert reuse == ["numpy==1.24.2", "pyproj==3.4.1", "pillow==9.4.0"]
    # attrs: QGIS's is too old for affine 3; six: another version was resolved (loose retry)
    assert install == ["attrs==26.1.0", "rasterio==1.4.4", "six==1.17.0", "onnxruntime==1.32.0"]
    assert installer.select_installs([("attrs", "22.2.0"), ("six", "1.16.0")], have) == (
        ["attrs==22.2.0"], ["six==1.16.0"])  # a too old NEWER_THAN_QGIS copy is never the one used


def test_select_installs_against_this_python():
    """Against the versions this interpreter (QGIS's Python here) really has, as the worker sees them."""
    have = installer.interpreter_pins(Path(sys.executable))
    import numpy
    import PIL
    import pyproj

    assert have["numpy"] == numpy.__version__ and have["pillow"] == PIL.__version__
    resolved = [("numpy", numpy.__version__), ("pyproj", pyproj.__version__), ("Pillow", PIL.__version__),
                ("rsclip-not-installed", "1.0")]
    install, reuse = installer.select_installs(resolved, have)
    assert install == ["rsclip-not-installed==1.0"] and len(reuse) == 3
