"""Box readers and Box-to-Caption on the two real DOTA images in shared data, plus small fixtures."""

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from training.data.b2c import b2c_captions, chip_captions, chip_windows, count_boxes, split_center
from training.data.boxes import Box, read_coco_boxes, read_dota, read_geojson_boxes
from training.data.errors import DatasetError
from tests.utils.dota_labels import raw_objects as _raw_objects
from training.data.names import readable_name

DOTA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dota"


def raw_objects(name):
    return _raw_objects(DOTA, name)

# Independent oracle for caption text: number words and DOTA plural forms written out by hand.
WORDS = {1: None, 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
READABLE = {
    "plane": ("plane", "planes"), "ship": ("ship", "ships"), "storage-tank": ("storage tank", "storage tanks"),
    "baseball-diamond": ("baseball diamond", "baseball diamonds"), "tennis-court": ("tennis court", "tennis courts"),
    "basketball-court": ("basketball court", "basketball courts"),
    "ground-track-field": ("ground track field", "ground track fields"), "harbor": ("harbor", "harbors"),
    "bridge": ("bridge", "bridges"), "large-vehicle": ("large vehicle", "large vehicles"),
    "small-vehicle": ("small vehicle", "small vehicles"), "helicopter": ("helicopter", "helicopters"),
    "roundabout": ("roundabout", "roundabouts"), "soccer-ball-field": ("soccer field", "soccer fields"),
    "swimming-pool": ("swimming pool", "swimming pools"),
}


def phrase(n, label):
    singular, plural = READABLE[label]
    if n == 1:
        return ("an " if singular[0] in "aeiou" else "a ") + singular
    return f"{'many' if n > 10 else WORDS[n]} {plural}"




@pytest.fixture(scope="module")
def dota():
    if not (DOTA / "labelTxt" / "P0706.txt").is_file():
        pytest.skip(f"shared DOTA data missing at {DOTA}")
    out = {}
    for name in ("P0706", "P1888"):
        with Image.open(DOTA / "images" / f"{name}.png") as im:
            out[name] = (read_dota(DOTA / "labelTxt" / f"{name}.txt"), im.size)
    return out


@pytest.mark.parametrize("name", ["P0706", "P1888"])
def test_dota_counts_match_raw_lines(dota, name):
    labels, _ = dota[name]
    assert Counter(b.name for b in labels.boxes) == Counter(c for c, _, _ in raw_objects(name))


def test_dota_hand_checked_facts(dota):
    p0706, p1888 = dota["P0706"][0], dota["P1888"][0]
    # Read off the files: P0706 has 531 ships (6 of them difficult) and 5 harbors; P1888 50 large + 14 small vehicles.
    assert count_boxes(p0706.boxes) == {"ship": 531, "harbor": 5}
    assert count_boxes(p1888.boxes) == {"large-vehicle": 50, "small-vehicle": 14}
    assert sum(b.difficult for b in p0706.boxes) == 6
    assert len(read_dota(p0706.path, include_difficult=False).boxes) == 530
    assert p0706.gsd == pytest.approx(0.255589285596) and p1888.gsd == pytest.approx(0.266170468393)
    assert p0706.imagesource == "GoogleEarth"
    first = p0706.boxes[0]  # "1054 1028 1063 1011 1111 1040 1112 1062 ship 1"
    assert (first.name, first.xmin, first.ymin, first.xmax, first.ymax, first.difficult) == \
        ("ship", 1054, 1011, 1112, 1062, True)
    assert first.polygon == ((1054, 1028), (1063, 1011), (1111, 1040), (1112, 1062))


def test_readable_names_for_all_dota_classes():
    for label, expected in READABLE.items():
        assert readable_name(label) == expected, label
    other = {"bus": "buses", "church": "churches", "factory": "factories", "runway": "runways",
             "person": "people", "aircraft": "aircraft", "DenseResidential": "dense residentials",
             "container_crane": "container cranes"}
    for label, plural in other.items():
        assert readable_name(label)[1] == plural, label


def test_whole_image_captions(dota):
    labels, (w, h) = dota["P1888"]
    caps = b2c_captions(labels.boxes, w, h, seed=3)
    assert len(caps) == 5
    assert caps[2] == "There are many large vehicles and many small vehicles in the image."
    for cap in caps[2:]:
        assert "many large vehicles" in cap and "many small vehicles" in cap
    assert not any("-" in c for c in caps)
    labels, (w, h) = dota["P0706"]
    assert b2c_captions(labels.boxes, w, h)[2] == "There are many ships and five harbors in the image."


@pytest.mark.parametrize("name,chip", [("P1888", 160), ("P0706", 256)])
def test_chip_counts_and_captions(dota, name, chip):
    labels, (w, h) = dota[name]
    objects = raw_objects(name)
    chips = chip_captions(labels.boxes, w, h, chip, chip, seed=0, keep_empty=True)
    assert [c.window for c in chips] == chip_windows(w, h, chip, chip)
    owned = Counter(i for c in chips for i, (_, cx, cy) in enumerate(objects)
                    if c.window[0] <= cx < c.window[2] and c.window[1] <= cy < c.window[3])
    assert len(owned) == len(objects)  # every object lands in a chip; only the edge-flush last chips overlap
    small_counts = 0
    for c in chips:
        x0, y0, x1, y1 = c.window
        expected = Counter(k for k, cx, cy in objects if x0 <= cx < x1 and y0 <= cy < y1)
        assert c.counts == dict(expected)
        if not expected:
            assert c.captions == []
            continue
        text = " ".join(c.captions).lower()
        for label in READABLE:  # only classes with a centre in the chip are mentioned
            assert (READABLE[label][0] in text) == (label in expected), (c.window, label)
        order = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
        listed = [phrase(n, k) for k, n in order]
        listed = listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
        be = "is" if order[0][1] == 1 else "are"
        assert c.captions[2] == f"There {be} {listed} in the image."
        small_counts += any(n <= 10 for n in expected.values())
        for b in c.boxes:  # clipped into chip coordinates
            assert 0 <= b.xmin <= b.xmax <= x1 - x0 and 0 <= b.ymin <= b.ymax <= y1 - y0
    assert small_counts >= 2  # the chips exercise number words, not only "many"


def test_chip_windows_cover_image():
    wins = chip_windows(712, 557, 256, 200)
    assert wins[0] == (0, 0, 256, 256) and wins[-1] == (456, 301, 712, 557)
    assert {w[0] for w in wins} == {0, 200, 400, 456}
    assert chip_windows(100, 80, 256) == [(0, 0, 100, 80)]


def test_center_and_away_captions():
    boxes = [Box("plane", 45, 45, 55, 55)] + [Box("storage-tank", x, y, x + 4, y + 4)
                                              for x, y in [(0, 0), (90, 0), (0, 90)]]
    center, away = split_center(boxes, 100, 100)
    assert [b.name for b in center] == ["plane"] and len(away) == 3
    caps = b2c_captions(boxes, 100, 100, seed=0)
    assert "a plane" in caps[0] and "storage tank" not in caps[0]
    assert "three storage tanks" in caps[1] and "plane" not in caps[1]
    assert caps[2] == "There are three storage tanks and a plane in the image."
    many = b2c_captions([Box("swimming-pool", i, 0, i + 1, 1) for i in range(11)], 100, 100)
    ten = b2c_captions([Box("swimming-pool", i, 0, i + 1, 1) for i in range(10)], 100, 100)
    assert "many swimming pools" in many[2] and "ten swimming pools" in ten[2]
    assert b2c_captions([], 100, 100) == []


def test_determinism(dota):
    labels, (w, h) = dota["P1888"]
    runs = [chip_captions(labels.boxes, w, h, 200, 150, seed=s) for s in (7, 7, 8)]
    assert [c.captions for c in runs[0]] == [c.captions for c in runs[1]]
    variants = {tuple(b2c_captions(labels.boxes, w, h, seed=s)) for s in range(10)}
    assert len(variants) > 1  # the seed does change template choice / order


def test_coco_and_geojson_pixel_readers(tmp_path):
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
            "categories": [{"id": 3, "name": "tennis-court"}],
            "annotations": [{"image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert read_coco_boxes(tmp_path / "c.json") == {"a.png": [Box("tennis-court", 10, 20, 40, 60)], "b.png": []}
    coco["annotations"][0]["category_id"] = 9
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"annotations\[0\].*category_id 9"):
        read_coco_boxes(tmp_path / "c.json")
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"class": "bridge"},
         "geometry": {"type": "Polygon", "coordinates": [[[5, 1], [9, 3], [6, 8], [5, 1]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 1]}}]}
    (tmp_path / "g.geojson").write_text(json.dumps(gj))
    with pytest.raises(DatasetError, match=r"features\[1\]"):
        read_geojson_boxes(tmp_path / "g.geojson", default_class="x")
    gj["features"].pop()
    (tmp_path / "g.geojson").write_text(json.dumps(gj))
    (box,) = read_geojson_boxes(tmp_path / "g.geojson")
    assert (box.name, box.xmin, box.ymin, box.xmax, box.ymax) == ("bridge", 5, 1, 9, 8)


def test_dota_bad_line_names_file_and_line(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("imagesource:GoogleEarth\ngsd:0.3\n1 2 3 4 5 6 7 8 ship 0\n1 2 3 ship 0\n")
    with pytest.raises(DatasetError, match=r"x\.txt:4"):
        read_dota(bad)
