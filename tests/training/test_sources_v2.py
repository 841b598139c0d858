"""Training sources of the v2 default model: caption CSVs, NWPU VHR-10 boxes, counting crops, folder and mask sets,
scene-overlap exclusions and near-duplicate hashes. Small fixtures written here, real DOTA boxes from ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.boxes import Box, read_dota, read_nwpu_vhr10
from training.data.count_crops import count_captions, count_crops
from training.data.errors import DatasetError
from training.data.near_duplicates import dhash, hashes, near_pairs
from training.data.overlap import exclusions
from training.data.readers import read_sentence_list_csv

torch = pytest.importorskip("torch")


def _image(path: Path, seed: int, size=(64, 48)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_sentence_list_csv(tmp_path):
    for n in ("a.jpg", "b.jpg"):
        _image(tmp_path / n, 0)
    import csv

    with (tmp_path / "set.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", "filename", "img_id", "split", "label", "sent_id", "sentence"])
        w.writerow([0, "a.jpg", 1, "train", "beach", "[1, 2]", repr(["Sand and sea.", "A beach's shore."])])
        w.writerow([1, "b.jpg", 2, "test", "pond", "[3]", repr(["A pond."])])
    recs = list(read_sentence_list_csv(tmp_path / "set.csv", tmp_path, split="train"))
    assert [(r.key, r.label, r.captions) for r in recs] == [("a.jpg", "beach", ("Sand and sea.", "A beach's shore."))]
    assert len(list(read_sentence_list_csv(tmp_path / "set.csv", tmp_path))) == 2


def test_sentence_list_csv_errors_name_the_line(tmp_path):
    _image(tmp_path / "a.jpg", 0)
    (tmp_path / "bad.csv").write_text("filename,split,sentence\na.jpg,train,not a list(\n")
    with pytest.raises(DatasetError, match="line 2"):
        list(read_sentence_list_csv(tmp_path / "bad.csv", tmp_path))
    (tmp_path / "cols.csv").write_text("filename,caption\na.jpg,x\n")
    with pytest.raises(DatasetError, match="missing columns"):
        list(read_sentence_list_csv(tmp_path / "cols.csv", tmp_path))
    (tmp_path / "gone.csv").write_text("filename,split,sentence\nmissing.jpg,train,['x y z']\n")
    with pytest.raises(DatasetError, match="missing.jpg"):
        list(read_sentence_list_csv(tmp_path / "gone.csv", tmp_path))


def test_nwpu_boxes(tmp_path):
    p = tmp_path / "001.txt"
    p.write_text("(563,478),(630,573),1\n\n(10, 20),(5,40),10\n")
    boxes = read_nwpu_vhr10(p)
    assert boxes == [Box("airplane", 563, 478, 630, 573), Box("vehicle", 5, 20, 10, 40)]
    p.write_text("(1,2),(3,4),11\n")
    with pytest.raises(DatasetError, match="class id 11"):
        read_nwpu_vhr10(p)
    p.write_text("1 2 3 4 airplane\n")
    with pytest.raises(DatasetError, match="line 1"):
        read_nwpu_vhr10(p)


def _overlaps(b, w):
    return b.xmax > w[0] and b.xmin < w[2] and b.ymax > w[1] and b.ymin < w[3]


def test_count_crops_hold_exactly_n_objects_on_real_dota_boxes(shared_data):
    counts = set()
    for name in ("P0706", "P1888"):
        labels = read_dota(shared_data / "dota" / "labelTxt" / f"{name}.txt")
        with Image.open(shared_data / "dota" / "images" / f"{name}.png") as im:
            w, h = im.size
        crops = count_crops(labels.boxes, w, h, seed=name)
        for c in crops:
            same = [b for b in labels.boxes if b.name == c.name and _overlaps(b, c.window)]
            x0, y0, x1, y1 = c.window
            assert len(same) == c.count and 1 <= c.count <= 10
            assert all(b.xmin >= x0 and b.ymin >= y0 and b.xmax <= x1 and b.ymax <= y1 for b in same)
            assert x1 - x0 == y1 - y0 and 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
        assert crops == count_crops(labels.boxes, w, h, seed=name)  # seeded
        counts |= {c.count for c in crops}
    assert len(counts) >= 3, counts


def test_count_captions_use_the_runtime_prompt_words():
    from rsclip_geo.runtime.count_prompts import count_prompts

    caps = count_captions("storage tank", 3)
    assert "a satellite photo of three storage tanks." in caps
    assert count_prompts("storage tank", 3)[2][0] + "." in caps
    assert "a satellite photo of an airplane." in count_captions("airplane", 1)
    assert "a satellite photo of one airplane." in count_captions("airplane", 1)


def _nwpu_fixture(root: Path) -> Path:
    for sub in ("positive_image_set", "ground_truth", "image_set"):
        (root / sub).mkdir(parents=True)
    _image(root / "positive_image_set" / "001.jpg", 1, (300, 200))
    (root / "ground_truth" / "001.txt").write_text("(10,10),(40,40),3\n(80,60),(110,90),3\n(120,150),(150,170),2\n")
    _image(root / "positive_image_set" / "002.jpg", 2, (200, 200))
    (root / "ground_truth" / "002.txt").write_text("(50,50),(90,90),1\n")
    (root / "image_set" / "train.txt").write_text("001\n002\n")
    (root / "image_set" / "test.txt").write_text("")
    return root


def test_detection_source_has_b2c_and_counting_items(tmp_path):
    from training.sources import build_detection

    root = _nwpu_fixture(tmp_path / "nwpu")
    src = build_detection({"name": "nwpu", "root": str(root), "cache_size": 32}, tmp_path, None)
    assert src.images.shape[1:] == (3, 32, 32) and src.images.dtype == torch.uint8
    assert len(src) == len(src.groups) and set(src.groups) == set(src.captions)
    assert any("two storage tanks" in c for c in src.captions["nwpu:001"])
    assert "a satellite photo of two storage tanks." in src.captions["nwpu:001/storage tank/2"]
    assert "nwpu:002/airplane/1" in src.captions
    with pytest.raises(DatasetError, match="does not exist"):
        build_detection({"name": "nwpu", "root": str(tmp_path / "nope")}, tmp_path, None)


def test_captions_source_cleans_and_excludes(tmp_path):
    from training.sources import build_captions

    for i, n in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _image(tmp_path / n, i)
    (tmp_path / "set.csv").write_text(
        "filename,split,label,sentence\n"
        "a.jpg,train,x,\"['Many boats in a port.', 'many boats in a port', 'Ships at piers.']\"\n"
        "b.jpg,train,x,\"['A green forest canopy.']\"\n"
        "c.jpg,test,x,\"['A test image here.']\"\n")
    (tmp_path / "ex.txt").write_text("# held out elsewhere\nb.jpg\n")
    spec = {"name": "cap", "csv": str(tmp_path / "set.csv"), "images": str(tmp_path), "exclude": "ex.txt"}
    src = build_captions(spec, tmp_path, None)
    assert src.groups == ["cap:a.jpg"]
    assert src.captions["cap:a.jpg"] == ["Many boats in a port.", "Ships at piers."]


def test_aid_source_v2_split_has_all_classes_and_exclusions(shared_data, tmp_path):
    from training.data.aid import SPLIT30_FILE, load_split
    from training.sources import build_aid

    full = load_split(SPLIT30_FILE)
    assert len(full["train"]) == 30 and not full["unseen"] and not full["unseen_classes"]
    v1 = load_split()
    assert all(full["val"][c] == v1["val"][c] for c in v1["val"])  # the 24 seen classes keep their val images
    split = {"unseen_classes": [], "train": {"Beach": full["train"]["Beach"][:3], "Forest": full["train"]["Forest"][:2]}}
    (tmp_path / "s.json").write_text(json.dumps(split))
    (tmp_path / "ex.txt").write_text(full["train"]["Beach"][0] + "\n")
    src = build_aid({"root": str(shared_data / "aid"), "split": "s.json", "exclude": "ex.txt", "cache_size": 32},
                    tmp_path, None)
    assert src.groups == ["aid:Beach", "aid:Beach", "aid:Forest", "aid:Forest"]
    assert any("beach" in c for c in src.captions["aid:Beach"])  # held-out words allowed when nothing is held out
    split["unseen_classes"] = ["Beach"]
    split["train"] = {"Forest": split["train"]["Forest"]}
    (tmp_path / "s1.json").write_text(json.dumps(split))
    build_aid({"root": str(shared_data / "aid"), "split": "s1.json", "cache_size": 32}, tmp_path, None)


def test_folder_and_mask_sources(tmp_path):
    from training.sources import build_folder, build_segmentation

    for c in ("tennis_court", "Harbor"):
        (tmp_path / "scenes" / c).mkdir(parents=True)
        for i in range(2):
            _image(tmp_path / "scenes" / c / f"{i}.png", i)
    (tmp_path / "phr.json").write_text(json.dumps({"Harbor": ["a harbor", "a marina"]}))
    src = build_folder({"name": "f", "root": str(tmp_path / "scenes"), "phrases": "phr.json", "cache_size": 16,
                        "templates": ["a photo of {}."]}, tmp_path, None)
    assert src.groups == ["f:Harbor"] * 2 + ["f:tennis_court"] * 2
    assert src.captions == {"f:Harbor": ["a photo of a harbor.", "a photo of a marina."],
                            "f:tennis_court": ["a photo of tennis court."]}
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(2):
        _image(tmp_path / "img" / f"t{i}.png", i, (64, 64))
        m = np.zeros((64, 64), np.uint8)
        if i == 0:
            m[5:20, 5:20] = 1
            m[40:60, 40:60] = 1
        Image.fromarray(m).save(tmp_path / "msk" / f"t{i}.png")
    seg = build_segmentation({"name": "s", "images": str(tmp_path / "img"), "masks": str(tmp_path / "msk"),
                              "classes": {"1": "building"}, "cache_size": 16}, tmp_path, None)
    assert seg.groups == ["s:t0"]  # t1's mask is empty
    assert any("two buildings" in c for c in seg.captions["s:t0"])
    (tmp_path / "msk" / "t1.png").unlink()
    with pytest.raises(DatasetError, match="t1"):
        build_segmentation({"images": str(tmp_path / "img"), "masks": str(tmp_path / "msk"),
                            "classes": {"1": "building"}}, tmp_path, None)


def test_folder_source_include_exclude_lists(tmp_path):
    """A split's test part is held out by file list; a list written for another copy of the set is an error."""
    from training.sources import build_folder

    for c in ("beach", "forest"):
        (tmp_path / "scenes" / c).mkdir(parents=True)
        for i in range(3):
            _image(tmp_path / "scenes" / c / f"{c}{i}.png", i)
    (tmp_path / "test.txt").write_text("# held out\nbeach/beach0.png\nforest/forest2.png  # near-duplicate\n")
    spec = {"name": "f", "root": str(tmp_path / "scenes"), "cache_size": 16, "templates": ["{}."]}
    src = build_folder({**spec, "exclude": "test.txt"}, tmp_path, None)
    assert src.groups == ["f:beach"] * 2 + ["f:forest"] * 2
    first = src.images[0].numpy()
    assert np.array_equal(first, build_folder(spec, tmp_path, None).images[1].numpy())  # beach0 left out
    (tmp_path / "only.txt").write_text("forest/forest1.png\n")
    assert build_folder({**spec, "include": "only.txt", "classes": ["forest"]}, tmp_path, None).groups == ["f:forest"]
    with pytest.raises(DatasetError, match="every image is left out"):
        build_folder({**spec, "include": "only.txt"}, tmp_path, None)  # beach keeps nothing
    (tmp_path / "other.txt").write_text("baseball_diamond/beach1.png\n")
    with pytest.raises(DatasetError, match="name no image here"):
        build_folder({**spec, "exclude": "other.txt"}, tmp_path, None)


def test_overlap_exclusions():
    rows = [{"filename": "beach_1.jpg", "split": "test"}, {"filename": "beach_2.jpg", "split": "train"},
            {"filename": "00001.jpg", "split": "train"}, {"filename": "pond_3.jpg", "split": "val"}]
    split = {"train": {"Beach": ["beach_1.jpg"], "Pond": ["pond_3.jpg", "pond_4.jpg"]},
             "val": {"Beach": ["beach_2.jpg"]}}
    assert exclusions(rows, split) == (["beach_1.jpg", "pond_3.jpg"], ["beach_2.jpg"])


def test_near_duplicate_hash_finds_resized_copies(shared_data, tmp_path):
    a = shared_data / "aid" / "Forest" / sorted(p.name for p in (shared_data / "aid" / "Forest").iterdir())[0]
    other = shared_data / "aid" / "Port" / sorted(p.name for p in (shared_data / "aid" / "Port").iterdir())[0]
    with Image.open(a) as im:
        im.convert("RGB").resize((224, 224), Image.BICUBIC).save(tmp_path / "copy.jpg", quality=80)
    ha, hb = hashes([a]), hashes([tmp_path / "copy.jpg", other])
    pairs = near_pairs(ha, hb, max_bits=6)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)]
    assert dhash(a) == dhash(a)


def test_batches_mix_sources_decoded_at_different_sizes():
    """AID is decoded at 150 px and RSICD at 160: one batch must hold both, augmented to the model size."""
    from training.augment import AugmentConfig
    from training.loop import make_batch
    from training.sources import Source

    a = Source("a", 1.0, torch.full((2, 3, 150, 150), 10, dtype=torch.uint8), ["a:x", "a:x"], {"a:x": ["x"]})
    b = Source("b", 1.0, torch.full((2, 3, 160, 160), 200, dtype=torch.uint8), ["b:1", "b:2"],
               {"b:1": ["one"], "b:2": ["two"]})
    aug = AugmentConfig(brightness=0, contrast=0, saturation=0)
    x, caps, groups = make_batch([(0, 0), (1, 0), (0, 1), (1, 1)], [a, b], 64, aug, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64)
    assert caps == ["x", "one", "x", "two"] and groups.tolist() == [0, 1, 0, 2]
    assert x[0].mean() < x[1].mean() and x[2].mean() < x[3].mean()  # each item kept its own pixels


def test_a_training_cli_names_missing_data_without_a_traceback(tmp_path):
    """exit_on_config_error: a missing data folder ends a training CLI with 'error: <which entry, which path>'."""
    from training.config import exit_on_config_error
    from training.sources import build_detection

    def main():
        build_detection({"name": "nwpu", "root": "$RSCLIP_DATA/nowhere"}, tmp_path, None)

    with pytest.raises(SystemExit) as exc:
        exit_on_config_error(main)
    assert str(exc.value.code).startswith("error: [[datasets]] nwpu: root = '$RSCLIP_DATA/nowhere' -> ")
    assert str(exc.value.code).endswith("(fetch the data as training/DATA.md describes, or set RSCLIP_DATA)")
