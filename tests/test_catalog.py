"""Known checkpoints, `models list/info/pull`: complete entries, fast offline failure, cached bundles."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rsclip_geo.hub import catalog
from rsclip_geo.hub import pull as hub
from rsclip_geo.cli import main
from rsclip_geo.errors import BundleError, DownloadError
from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

REQUIRED = {
    # name: (repo, file, architecture)
    "remoteclip-rn50": ("chendelong/RemoteCLIP", "RemoteCLIP-RN50.pt", "RN50"),
    "remoteclip-vit-b-32": ("chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt", "ViT-B-32"),
    "remoteclip-vit-l-14": ("chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt", "ViT-L-14"),
    "georsclip-vit-b-32": ("Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", "ViT-B-32"),
    "openai-vit-b-32": ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors", "ViT-B-32"),
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RSCLIP_GEO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def dead_hub(cache, monkeypatch) -> str:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return endpoint


def test_catalog_entries_are_complete():
    entries = catalog.list_entries()
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    assert set(REQUIRED) | {"rsclip-default"} <= set(names)
    for name, (repo, file, arch) in REQUIRED.items():
        e = catalog.get_entry(name)
        assert (e.repo, e.file, e.architecture, e.kind) == (repo, file, arch, "hf")
        assert e.activation == "quick_gelu"  # all OpenAI-derived
        assert e.license and e.title and e.homepage.startswith("https://")
        assert e.url() == f"https://huggingface.co/{repo}/resolve/main/{file}"
        assert e.source()["url"] == e.url() and e.source()["repo"] == repo
    assert catalog.get_entry("georsclip-vit-b-32").license == "cc-by-4.0"
    default = catalog.get_entry("rsclip-default")
    assert default.kind == "shipped" and default.url() == ""


def test_catalog_architectures_exist_in_open_clip():
    open_clip = pytest.importorskip("open_clip")
    for name in REQUIRED:
        assert catalog.get_entry(name).architecture in open_clip.list_models(), name


def test_unknown_name_lists_known_ones():
    with pytest.raises(BundleError, match="remoteclip-vit-b-32"):
        catalog.get_entry("remoteclip-vit-b-16")


def test_status_of_default_and_pulled(cache):
    default = catalog.get_entry("rsclip-default")
    expected = "shipped" if (DEFAULT_MODEL_DIR / "model.json").is_file() else "not built"
    assert catalog.status(default) == expected
    assert catalog.status(catalog.get_entry("remoteclip-rn50")) == "not pulled"
    assert catalog.bundle_dir(catalog.get_entry("remoteclip-rn50")) == cache / "models" / "remoteclip-rn50"


def test_export_command_is_exact():
    e = catalog.get_entry("remoteclip-vit-l-14")
    assert hub.export_command(e, Path("/c/models/remoteclip-vit-l-14"), int8=True) == (
        "rsclip-geo models export --arch ViT-L-14 --checkpoint /path/to/RemoteCLIP-ViT-L-14.pt "
        "-o /c/models/remoteclip-vit-l-14 --name remoteclip-vit-l-14 --activation quick_gelu --int8")


def test_pull_offline_fails_fast_with_url_and_command(dead_hub, cache):
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        hub.pull("remoteclip-vit-b-32")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert f"{dead_hub}/chendelong/RemoteCLIP/resolve/main/RemoteCLIP-ViT-B-32.pt" in msg
    assert "https://huggingface.co/chendelong/RemoteCLIP/resolve/main/RemoteCLIP-ViT-B-32.pt" in msg
    out = cache / "models" / "remoteclip-vit-b-32"
    assert (f"rsclip-geo models export --arch ViT-B-32 --checkpoint /path/to/RemoteCLIP-ViT-B-32.pt -o {out} "
            "--name remoteclip-vit-b-32 --activation quick_gelu") in msg
    assert not out.exists()


def test_pull_with_hf_hub_offline_fails_without_network(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="offline mode") as err:
        hub.pull("georsclip-vit-b-32")
    assert time.monotonic() - start < 10
    assert "https://huggingface.co/Zilun/GeoRSCLIP/resolve/main/ckpt/RS5M_ViT-B-32.pt" in str(err.value)


def test_cli_pull_offline_exits_1_fast(dead_hub, cache):
    start = time.monotonic()
    res = CliRunner().invoke(main, ["models", "pull", "openai-vit-b-32"])
    assert time.monotonic() - start < 10
    assert res.exit_code == 1
    assert "timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors" in res.stderr
    assert "rsclip-geo models export --arch ViT-B-32" in res.stderr


def test_pulled_bundle_is_reused_listed_and_described(tiny_bundle, dead_hub, cache):
    target = cache / "models" / "remoteclip-rn50"
    shutil.copytree(tiny_bundle, target)
    assert hub.pull("remoteclip-rn50") == target  # no download attempted: the hub is dead
    runner = CliRunner()
    res = runner.invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    assert "remoteclip-rn50  [pulled]" in res.output and "remoteclip-vit-b-32  [not pulled]" in res.output
    res = runner.invoke(main, ["models", "info", "remoteclip-rn50"])
    assert res.exit_code == 0, res.output
    assert "embed dim" in res.output and "files" in res.output and "model.json" in res.output


def test_models_list_shows_every_entry(cache):
    res = CliRunner().invoke(main, ["models", "list"])
    assert res.exit_code == 0, res.output
    for e in catalog.list_entries():
        assert e.name in res.output
        if e.kind == "hf":
            assert f"{e.repo}/{e.file}" in res.output and e.license in res.output
    default_state = "shipped" if (DEFAULT_MODEL_DIR / "model.json").is_file() else "not built"
    assert f"rsclip-default  [{default_state}]" in res.output


def test_models_info_of_a_catalog_name_not_pulled(cache):
    res = CliRunner().invoke(main, ["models", "info", "georsclip-vit-b-32"])
    assert res.exit_code == 0, res.output
    assert "rsclip-geo models pull georsclip-vit-b-32" in res.output and "cc-by-4.0" in res.output
    res = CliRunner().invoke(main, ["models", "info", "no-such-model"])
    assert res.exit_code == 1 and "no-such-model" in res.stderr


def test_catalog_hub_and_cli_do_not_import_torch():
    code = ("import sys, rsclip_geo.hub.catalog, rsclip_geo.hub.pull, rsclip_geo.export, rsclip_geo.cli.models; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'open_clip', 'onnx', 'huggingface_hub', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
