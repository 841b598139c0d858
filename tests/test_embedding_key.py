"""embeddings/key.py: one rule for whether stored embeddings are still this scene's, this model's and this tiling's."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rsclip_geo.embeddings.key import scene_fingerprint, stale_reason, tiling_key, usable_scales
from rsclip_geo.raster.tiling import TileSpec
from tests.utils.rasters import write_geotiff


@pytest.fixture()
def scene(tmp_path):
    return write_geotiff(tmp_path / "s.tif", np.full((3, 64, 64), 100, np.uint8))


def _meta(scene, fingerprint="abc", scales=(TileSpec(size_px=32),), options=None, max_invalid=0.5):
    return {"scene": scene_fingerprint(scene), "model": {"name": "m", "fingerprint": fingerprint},
            "tiling": tiling_key(list(scales), options or {}, max_invalid)}


def test_matching_key_is_fresh(scene):
    meta = _meta(scene)
    assert stale_reason(meta, model_fingerprint="abc", scene=scene, tiling=meta["tiling"]) is None
    # the CLI passes every scene option explicitly; the defaults make the same key as none at all
    explicit = tiling_key([TileSpec(size_px=32)], {"stretch": "auto"}, 0.5)
    assert stale_reason(meta, model_fingerprint="abc", scene=scene, tiling=explicit) is None


def test_each_part_names_its_own_reason(scene):
    meta = _meta(scene)
    assert "other weights" in stale_reason(meta, model_fingerprint="xyz", scene=scene)
    assert "'m'" in stale_reason(meta, model_fingerprint="xyz")
    want = tiling_key([TileSpec(size_px=48)], {}, 0.5)
    assert stale_reason(meta, model_fingerprint="abc", tiling=want) == "the tile sizes/overlaps differ"
    want = tiling_key([TileSpec(size_px=32)], {"stretch": "none"}, 0.5)
    assert stale_reason(meta, model_fingerprint="abc", tiling=want) == "band/stretch/validity options differ"
    want = tiling_key([TileSpec(size_px=32)], {}, 0.25)
    assert stale_reason(meta, model_fingerprint="abc", tiling=want) == "max_invalid differs"
    # heatmap/count compare only the options and take the scales they find
    want = tiling_key([TileSpec(size_px=48)], {}, 0.5)
    assert stale_reason(meta, model_fingerprint="abc", tiling=want, tiling_parts=("scene_options", "max_invalid")) is None


def test_a_rewritten_scene_is_stale_even_with_its_old_mtime(scene):
    meta = _meta(scene)
    st = scene.stat()
    data = bytearray(scene.read_bytes())
    data[-1] ^= 0xFF
    scene.write_bytes(bytes(data))
    os.utime(scene, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stale_reason(meta, model_fingerprint="abc", scene=scene) == "the scene file changed"
    assert stale_reason(meta, model_fingerprint="abc") is None  # no scene given: only the model counts


def test_options_written_by_another_version_are_stale_not_an_error(scene):
    meta = _meta(scene)
    meta["tiling"]["scene_options"]["an_option_from_the_future"] = 1
    want = tiling_key([TileSpec(size_px=32)], {}, 0.5)
    assert stale_reason(meta, model_fingerprint="abc", tiling=want) == "band/stretch/validity options differ"


def test_usable_scales_maps_wanted_to_stored(scene):
    meta = _meta(scene, scales=(TileSpec(size_px=32), TileSpec(size_px=16)))
    wanted = [TileSpec(size_px=16), TileSpec(size_px=64), TileSpec(size_px=32)]
    assert usable_scales(meta, wanted) == {0: 1, 2: 0}
    assert usable_scales({"tiling": None}, wanted) == {}
