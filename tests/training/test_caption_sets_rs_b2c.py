"""The rs-b2c caption-set builder on real shared data: one DOTA image, the SpaceNet chip."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from rsclip_geo.evaluation.datasets import load_rgb, read_captions
from tests.utils.dota_labels import raw_objects
from training.caption_sets.__main__ import build_set, main
from training.data.b2c import b2c_captions, boxes_in_window, chip_windows
from training.data.boxes import read_dota, read_geojson_boxes
from training.data.errors import DatasetError
from training.data.readers import read_karpathy_json

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOTA = DATA / "dota"


@pytest.fixture(scope="module")
def p1888(tmp_path_factory):
    if not (DOTA / "images" / "P1888.png").is_file():
        pytest.skip(f"shared DOTA data missing at {DOTA}")
    out = tmp_path_factory.mktemp("sets") / "rs-b2c"
    assert main(["rs-b2c", "--out", str(out), "--data", str(DATA), "--only", "P1888"]) == 0
    return out




def test_dota_chips_read_back_with_b2c_captions_and_objects(p1888):
    data = json.loads((p1888 / "captions.json").read_text())
    objects = raw_objects(DOTA, "P1888")
    with Image.open(DOTA / "images" / "P1888.png") as im:
        source = np.asarray(im.convert("RGB"))
    labels = read_dota(DOTA / "labelTxt" / "P1888.txt")
    h, w = source.shape[:2]
    windows = chip_windows(w, h, 256)
    kept = {tuple(item["window"]): item for item in data["images"]}
    assert len(windows) == 9 and len(kept) == 9  # measured: every 256 px chip of P1888 owns a vehicle
    for window in windows:
        x0, y0, x1, y1 = window
        expected = Counter(k for k, cx, cy in objects if x0 <= cx < x1 and y0 <= cy < y1)
        if not expected:
            assert window not in kept  # no chip without objects
            continue
        item = kept[window]
        assert item["counts"] == dict(expected)
        assert item["filename"] == f"P1888_x{x0:04d}_y{y0:04d}.png" and item["split"] == "test"
        raws = [s["raw"] for s in item["sentences"]]
        assert raws == b2c_captions(boxes_in_window(labels.boxes, window), x1 - x0, y1 - y0,
                                    seed=f"0:P1888:{x0}:{y0}")
        assert len(raws) == 5 and len(set(raws)) == 5
        with Image.open(p1888 / item["filepath"] / item["filename"]) as im:
            assert np.array_equal(np.asarray(im), source[y0:y1, x0:x1])  # the chip's own pixels, lossless
    # both readers read the set back, five captions an image, in file order
    cs = read_captions(p1888 / "captions.json")
    assert len(cs.image_paths) == 9 and len(cs.captions) == 45 and np.bincount(cs.caption_image).tolist() == [5] * 9
    assert cs.captions_of(0) == [s["raw"] for s in data["images"][0]["sentences"]]
    records = list(read_karpathy_json(p1888 / "captions.json", split="test"))
    assert [r.image.name for r in records] == [p.name for p in cs.image_paths]


def test_info_records_ceilings_of_the_written_captions(p1888):
    info = json.loads((p1888 / "info.json").read_text())
    entry = info["files"]["captions.json"]
    assert (entry["images"], entry["captions"], info["chip_size"]) == (9, 45, 256)
    assert info["sources"]["P1888"]["objects"] == 64
    data = json.loads((p1888 / "captions.json").read_text())
    texts = [s["raw"] for im in data["images"] for s in im["sentences"]]
    assert entry["recall_ceilings"]["distinct_captions"] == len(set(texts))
    assert entry["recall_ceilings"]["t2i_R@10"] == 1.0  # only 9 images
    assert entry["chance_recall"]["t2i_R@1"] == pytest.approx(1 / 9)


def test_spacenet_chips_use_mask_boxes_and_scene_stretch(tmp_path):
    if not (DATA / "scenes" / "spacenet_pan_050m_building_mask.tif").is_file():
        pytest.skip("shared SpaceNet data missing")
    info = build_set("rs-b2c", tmp_path / "sn", DATA, subset=["spacenet"])
    data = json.loads((tmp_path / "sn" / "captions.json").read_text())
    scene = load_rgb(DATA / "scenes" / "spacenet_pan_050m.tif")
    with rasterio.open(DATA / "scenes" / "spacenet_pan_050m.tif") as src:
        footprints = read_geojson_boxes(DATA / "scenes" / "spacenet_pan_050m_buildings.geojson", class_property=None,
                                        default_class="building", transform=src.transform)
    assert info["sources"]["spacenet"]["objects"] == 43  # M2B components = 43 footprints (test_m2b)
    kept = {tuple(im["window"]): im for im in data["images"]}
    windows = chip_windows(900, 900, 256)
    assert len(windows) == 16 and len(kept) == 15  # measured: one 256 px chip holds no building
    for window in windows:
        x0, y0, x1, y1 = window
        n_footprints = sum(x0 <= b.center[0] < x1 and y0 <= b.center[1] < y1 for b in footprints)
        if window not in kept:
            assert n_footprints == 0  # left out only where no footprint centre lies
            continue
        item = kept[window]
        # M2B boxes of the rasterised mask, not the polygons: their centres may move a pixel, so allow 1
        assert abs(item["counts"]["building"] - n_footprints) <= 1 and item["counts"]["building"] >= 1
        assert set(item["counts"]) == {"building"} and all("building" in s["raw"] for s in item["sentences"])
        chip = np.asarray(Image.open(tmp_path / "sn" / "images" / item["filename"]))
        assert chip.shape == (256, 256, 3) and np.array_equal(chip, scene[y0:y1, x0:x1])  # scene-wide stretch
        assert np.array_equal(chip[..., 0], chip[..., 2])  # one panchromatic band, replicated


def test_chip_size_option(tmp_path):
    if not (DOTA / "images" / "P1888.png").is_file():
        pytest.skip(f"shared DOTA data missing at {DOTA}")
    info = build_set("rs-b2c", tmp_path / "big", DATA, chip_size=512, subset=["P1888"])
    names = sorted(p.name for p in (tmp_path / "big" / "images").iterdir())
    assert names == ["P1888_x0000_y0000.png", "P1888_x0000_y0045.png", "P1888_x0200_y0000.png",
                     "P1888_x0200_y0045.png"]
    assert all(Image.open(tmp_path / "big" / "images" / n).size == (512, 512) for n in names)
    assert info["chip_size"] == 512 and info["files"]["captions.json"]["captions"] == 20


def test_refuses_output_inside_data_or_non_empty(tmp_path):
    with pytest.raises(DatasetError, match="inside the data folder"):
        build_set("rs-b2c", DATA / "caption_set", DATA, subset=["P1888"])
    assert not (DATA / "caption_set").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        build_set("rs-b2c", tmp_path / "used", DATA, subset=["P1888"])
    with pytest.raises(DatasetError, match="unknown rs-b2c source"):
        build_set("rs-b2c", tmp_path / "new", DATA, subset=["P9999"])
