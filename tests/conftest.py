"""Shared fixtures: the read-only shared data folder and a tiny real ONNX bundle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from tests.utils.tiny_bundle import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny_bundle"))


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle):
    import rsclip_geo

    return rsclip_geo.load_model(tiny_bundle, device="cpu", batch_size=4)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Indexes of read-only scenes (shared data) and pulled models go to a temporary cache, not ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RSCLIP_GEO_CACHE", str(tmp_path_factory.mktemp("rsclip_cache")))
    yield
    mp.undo()


def _tree(root: Path) -> set[str]:
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture(autouse=True, scope="session")
def _shared_data_untouched():
    """Tests copy shared files into tmp before use: nothing may appear in the shared folder (CI's is read-only,
    which hides a test that writes there; a writable clone would keep the file and fail the next run)."""
    before = _tree(SHARED_DATA) if SHARED_DATA.is_dir() else set()
    yield
    added = sorted(_tree(SHARED_DATA) - before) if SHARED_DATA.is_dir() else []
    if added:
        pytest.fail(f"tests wrote into the shared data folder {SHARED_DATA}: {added[:5]}", pytrace=False)
