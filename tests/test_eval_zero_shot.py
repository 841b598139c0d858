"""Zero-shot evaluation on folder-per-class image sets, with the tiny real ONNX bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsclip_geo.errors import LabelError, RasterInputError, RsclipError
from rsclip_geo.evaluation import (DatasetError, ImageFolderDataset, evaluate_zero_shot, load_rgb,
                                   zero_shot_from_embeddings)
from rsclip_geo.evaluation.zero_shot import topk_hits
from rsclip_geo.runtime.prompts import read_templates_file
from tests.utils.rasters import BLUE, GREEN, RED, write_geotiff

COLOURS = {"red": RED, "green": GREEN, "blue": BLUE}


def noisy(colour, seed: int, size: int = 24, noise: int = 25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = np.asarray(colour, np.int16)[None, None, :] + rng.integers(-noise, noise + 1, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_colour_dataset(root: Path, folders: dict[str, tuple] | None = None, per_format: int = 1) -> Path:
    """root/<folder>/ with noisy images of the folder's colour as PNG, JPEG and a 3-band GeoTIFF."""
    folders = folders or COLOURS
    for f, (name, colour) in enumerate(folders.items()):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_format):
            seed = 100 * f + 3 * i
            Image.fromarray(noisy(colour, seed)).save(d / f"img{i}.png")
            Image.fromarray(noisy(colour, seed + 1)).save(d / f"img{i}.jpg", quality=95)
            write_geotiff(d / f"img{i}.tif", noisy(colour, seed + 2).transpose(2, 0, 1).copy())
    return root


@pytest.fixture
def colours(tmp_path) -> Path:
    return make_colour_dataset(tmp_path / "colours")


def test_dataset_scan_finds_all_formats(colours):
    ds = ImageFolderDataset.from_folder(colours)
    assert ds.classes == ["blue", "green", "red"]
    assert len(ds) == 9
    assert sorted(p.suffix for p in ds.paths if p.parent.name == "red") == [".jpg", ".png", ".tif"]
    assert ds.class_counts() == {"blue": 3, "green": 3, "red": 3}


def test_load_rgb_geotiff_matches_pixels_and_replicates_one_band(tmp_path):
    rgb = noisy(RED, 7)
    write_geotiff(tmp_path / "a.tif", rgb.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.tif"), rgb)
    gray = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 40  # 16-bit: stretched like a scene
    write_geotiff(tmp_path / "pan.tif", gray)
    out = load_rgb(tmp_path / "pan.tif")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # low -> dark, high -> bright


def test_zero_shot_colours_all_correct(tiny_model, colours):
    r = evaluate_zero_shot(tiny_model, colours)
    assert r.top1 == 1.0 and r.top5 == 1.0 and r.n == 9
    assert r.per_class == {"blue": 1.0, "green": 1.0, "red": 1.0}
    np.testing.assert_array_equal(r.confusion, 3 * np.eye(3, dtype=int))
    assert r.k == 3  # top-5 with 3 classes is top-3
    assert r.model == "tiny-rgb" and r.provider == "CPUExecutionProvider"


def test_swapped_classnames_are_used_in_prompts(tiny_model, colours):
    swapped = {"red": "green", "green": "red", "blue": "blue"}
    r = evaluate_zero_shot(tiny_model, colours, classnames=swapped)
    assert r.per_class == {"blue": 1.0, "green": 0.0, "red": 0.0}
    assert r.top1 == pytest.approx(1 / 3)
    assert r.top5 == 1.0  # every class is within the top-min(5, 3)
    # red images are predicted as the folder whose prompt says 'red', i.e. 'green'
    assert r.confusion[r.classes.index("red"), r.classes.index("green")] == 3


def test_classnames_json_file_and_missing_folder(tiny_model, colours, tmp_path):
    good = tmp_path / "names.json"
    good.write_text(json.dumps({"red": "green", "green": "red", "blue": "blue", "extra": "x"}))
    assert evaluate_zero_shot(tiny_model, colours, classnames=good).per_class["red"] == 0.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"red": "red", "green": "green"}))
    with pytest.raises(LabelError, match=r"bad\.json.*'blue'"):
        evaluate_zero_shot(tiny_model, colours, classnames=bad)


def test_default_names_are_humanized(tiny_model, tmp_path):
    # 'DarkRed' must become 'dark red' for its prompt to contain the token 'red'
    root = make_colour_dataset(tmp_path / "h", {"DarkRed": RED, "deep_green": GREEN, "BlueWater": BLUE})
    r = evaluate_zero_shot(tiny_model, root)
    assert r.classnames == ["blue water", "dark red", "deep green"]
    assert r.top1 == 1.0


def test_a_sort_number_every_folder_starts_with_is_not_part_of_the_name(tiny_model, tmp_path):
    root = make_colour_dataset(tmp_path / "n", {"01_red": RED, "02_green": GREEN, "03-BlueWater": BLUE})
    r = evaluate_zero_shot(tiny_model, root)
    assert r.classnames == ["red", "green", "blue water"]
    assert r.top1 == 1.0
    # kept where it may be meant: not on every folder, or names that would collide without it
    root = make_colour_dataset(tmp_path / "m", {"3_red": RED, "green": GREEN, "blue": BLUE})
    assert evaluate_zero_shot(tiny_model, root).classnames == ["3 red", "blue", "green"]
    root = make_colour_dataset(tmp_path / "k", {"1_red": RED, "2_red": GREEN})
    assert evaluate_zero_shot(tiny_model, root).classnames == ["1 red", "2 red"]


def test_templates_are_used(tiny_model, colours, tmp_path):
    # context length 8: six filler words push the class name out, so every class embedding is zero,
    # all scores tie and everything is predicted as the first class ('blue')
    f = tmp_path / "templates.txt"
    f.write_text("# filler\na b c d e f {}\n")
    templates = read_templates_file(f)
    r = evaluate_zero_shot(tiny_model, colours, templates=templates)
    assert r.templates == ["a b c d e f {}"]
    assert r.per_class == {"blue": 1.0, "green": 0.0, "red": 0.0}
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of {}\nno placeholder\n")
    with pytest.raises(LabelError, match=r"bad\.txt:2"):
        read_templates_file(bad)


def test_topk_definition_known_answer():
    # 7 classes; image i has its true class at rank r_i (1-based) by construction
    ranks = [1, 2, 5, 6, 7, 3]
    c = 7
    class_emb = np.eye(c)
    image_emb, labels = [], []
    for i, r in enumerate(ranks):
        true = i % c
        others = [j for j in range(c) if j != true]
        order = others[:r - 1] + [true] + others[r - 1:]  # best first
        scores = np.zeros(c)
        scores[order] = np.linspace(1.0, 0.1, c)
        image_emb.append(scores)
        labels.append(true)
    r = zero_shot_from_embeddings(np.array(image_emb), labels, class_emb, [f"c{j}" for j in range(c)])
    assert r.k == 5
    assert r.top1 == pytest.approx(1 / 6)
    assert r.top5 == pytest.approx(4 / 6)  # ranks 1, 2, 5, 3
    assert topk_hits(np.array(image_emb), np.array(labels), 7).all()
    r3 = zero_shot_from_embeddings(np.array(image_emb), labels, class_emb, [f"c{j}" for j in range(c)], k=3)
    assert r3.top5 == pytest.approx(3 / 6)


def test_limit_per_class_is_seeded(tmp_path):
    root = make_colour_dataset(tmp_path / "many", per_format=3)
    a = ImageFolderDataset.from_folder(root, limit_per_class=4, seed=1)
    b = ImageFolderDataset.from_folder(root, limit_per_class=4, seed=1)
    c = ImageFolderDataset.from_folder(root, limit_per_class=4, seed=2)
    assert len(a) == 12 and a.paths == b.paths
    assert a.paths != c.paths
    assert a.class_counts() == {"blue": 4, "green": 4, "red": 4}


# ---- errors --------------------------------------------------------------------------------
def test_missing_dir(tmp_path):
    with pytest.raises(DatasetError, match="nope.*does not exist"):
        ImageFolderDataset.from_folder(tmp_path / "nope")


def test_no_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(noisy(RED, 0)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="flat: no class folders"):
        ImageFolderDataset.from_folder(tmp_path / "flat")


def test_empty_class_folder(colours):
    (colours / "yellow").mkdir()
    (colours / "yellow" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="yellow: class folder has no images"):
        ImageFolderDataset.from_folder(colours)


def test_unreadable_image_names_the_file(tiny_model, colours):
    (colours / "red" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(RasterInputError, match="broken.jpg"):
        evaluate_zero_shot(tiny_model, colours)
    (colours / "red" / "broken.jpg").unlink()
    (colours / "green" / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(RsclipError, match="broken.tif"):
        evaluate_zero_shot(tiny_model, colours)


# ---- real images with the shipped model ----------------------------------------------------------
def test_real_aid_images_with_default_model(shared_data, tmp_path):
    from rsclip_geo.runtime.paths import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.json").is_file():
        pytest.skip(f"shipped default model not installed at {DEFAULT_MODEL_DIR}")
    import rsclip_geo

    aid = shared_data / "aid"
    classes = ["Beach", "Forest", "Parking", "Farmland"]
    if not all((aid / c).is_dir() for c in classes):
        pytest.skip(f"AID classes {classes} not found under {aid}")
    root = tmp_path / "aid4"
    for c in classes:
        (root / c).mkdir(parents=True)
        for p in sorted((aid / c).glob("*.jpg"))[:4]:
            (root / c / p.name).symlink_to(p)
    model = rsclip_geo.load_model(None, device="cpu", batch_size=16)
    r = evaluate_zero_shot(model, root)
    assert r.n == 16
    assert r.top1 >= 0.5, r.per_class  # chance is 0.25
    assert r.top5 == 1.0  # k = 4 = every class


def test_real_files_decode(shared_data):
    """Real AID JPEG and real GeoTIFFs (4-band uint8, 1-band uint16) decode to uint8 RGB."""
    jpgs = sorted((shared_data / "aid" / "Forest").glob("*.jpg"))[:1]
    naip = shared_data / "scenes" / "naip_2020_rgbn_5m.tif"
    pan = shared_data / "scenes" / "spacenet_pan_050m.tif"
    if not jpgs or not naip.is_file() or not pan.is_file():
        pytest.skip("AID Forest images or the NAIP / SpaceNet scenes are missing from the shared data")
    forest = load_rgb(jpgs[0])
    assert forest.shape[2] == 3 and forest.dtype == np.uint8
    assert forest[..., 1].mean() > forest[..., 2].mean()  # vegetation: more green than blue
    rgbn = load_rgb(naip)
    assert rgbn.shape == (723, 934, 3) and rgbn.dtype == np.uint8
    gray = load_rgb(pan)
    assert gray.shape == (900, 900, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
