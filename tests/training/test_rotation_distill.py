"""The bundle's image tower read back into torch and written again, and the rotation-distillation stage end to end
on the shipped default bundle (tiny data, a few steps)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("timm")

from rsclip_geo.export import parity as par  # noqa: E402
from rsclip_geo.runtime.bundle import read_bundle  # noqa: E402
from rsclip_geo.runtime.encoder import load_model  # noqa: E402
from rsclip_geo.runtime.preprocess import Preprocessor  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "rsclip_geo" / "models" / "default"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parity_batch() -> np.ndarray:
    raw, _ = par.parity_images(None)
    return np.ascontiguousarray(Preprocessor(read_bundle(DEFAULT).image)(raw), dtype=np.float32)


def _embed(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    return par.ort_embed(par.ort_session(onnx_path), "image", x)


@pytest.fixture(scope="module")
def tower():
    from training.bundle_tower import tower_from_bundle

    return tower_from_bundle(DEFAULT)


def test_tower_reads_the_graph_it_came_from(tower):
    x = _parity_batch()
    cos = par.cosine_rows(_embed(DEFAULT / "image_encoder.onnx", x), par.torch_embed(tower, x))
    assert cos.min() > 0.9999
    # BatchNorm is the identity carrying the folded bias: train-mode statistics would change every output
    bns = [m for m in tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(float(m.running_mean.abs().max()) == 0 and float(m.weight.detach().min()) == 1 for m in bns)


def test_written_tower_is_what_runs(tower, tmp_path):
    import copy

    from training.bundle_tower import write_tower, written_parity

    x = _parity_batch()
    before = _embed(DEFAULT / "image_encoder.onnx", x)
    same = tmp_path / "same.onnx"
    record = write_tower(tower, DEFAULT / "image_encoder.onnx", same)
    assert record["values"] > 4_000_000 and record["max_abs_rounding"] < 1e-2
    assert par.cosine_rows(before, _embed(same, x)).min() > 0.99999

    changed = copy.deepcopy(tower)
    with torch.no_grad():  # a BatchNorm scale and the projection: both must reach the graph, folded
        bn = [m for m in changed.modules() if isinstance(m, torch.nn.BatchNorm2d)][3]
        bn.weight.mul_(torch.linspace(0.5, 1.5, bn.weight.numel()))
        noise = torch.randn(changed.head.proj.weight.shape, generator=torch.Generator().manual_seed(0))
        changed.head.proj.weight.add_(0.05 * noise)
    folder = tmp_path / "bundle"
    shutil.copytree(DEFAULT, folder)
    write_tower(changed, DEFAULT / "image_encoder.onnx", folder / "image_encoder.onnx")
    after = _embed(folder / "image_encoder.onnx", x)
    assert par.cosine_rows(before, after).min() < 0.99
    assert written_parity(changed, folder)["cosine_min"] > 0.999
    with pytest.raises(Exception, match="do not reproduce"):
        written_parity(tower, folder)


def test_a_non_timm_bundle_is_refused_by_name(tiny_bundle):
    from training.bundle_tower import BundleTowerError, tower_from_bundle

    with pytest.raises(BundleTowerError, match="model.json"):
        tower_from_bundle(tiny_bundle)


def _scene_folder(root: Path) -> None:
    """Two classes of striped 96 px scenes: stripes make a quarter turn change what the tower sees."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, axis in (("fields", 0), ("roads", 1)):
        (root / c).mkdir(parents=True)
        for i in range(6):
            base = (np.arange(96) // (4 + i) % 2 * 150 + 50).astype(np.uint8)
            img = np.repeat(base[:, None] if axis == 0 else base[None, :], 96, axis=1 if axis == 0 else 0)
            rgb = np.stack([img, np.roll(img, 3 * i, axis=axis), 255 - img], -1)
            rgb = np.clip(rgb + rng.integers(0, 30, rgb.shape), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / c / f"{c}_{i}.png")


def _scene_training_config(tmp_path: Path) -> Path:
    """``tmp_path/train.toml``: a training config whose one source is the folder of ``_scene_folder``."""
    _scene_folder(tmp_path / "scenes")
    path = tmp_path / "train.toml"
    path.write_text(f'[[datasets]]\nname = "scenes"\nkind = "folder"\nroot = "{tmp_path / "scenes"}"\n',
                    encoding="utf-8")
    return path


EPOCHS, LR = 6, 2e-5  # 12 steps of 5 images: enough to move the shipped tower on 10 images


def test_distillation_moves_single_views_onto_the_ensemble(tmp_path):
    from training.rotation_distill import run

    _scene_training_config(tmp_path)
    cfg = tmp_path / "distill.toml"
    cfg.write_text(f'datasets_from = "{tmp_path / "train.toml"}"\n[data]\nmax_per_source = 10\n'
                   f'[train]\nepochs = {EPOCHS}\nbatch = 5\nlr = {LR}\nlog_every = 100\n', encoding="utf-8")
    out = tmp_path / "run"
    records = run(cfg, DEFAULT, out, log=lambda s: None)
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    assert sum(r["images"]["scenes"] for r in records[:1]) == 10

    new = out / f"bundle_epoch{EPOCHS}"
    meta = json.loads((new / "model.json").read_text())
    rec = meta["source"]["rotation_distill"]
    assert rec["from_image_encoder_sha256"] == _sha(DEFAULT / "image_encoder.onnx") and rec["epoch"] == EPOCHS
    before = json.loads((DEFAULT / "model.json").read_text())["source"].get("rotation_distill")
    assert before is not None and rec.get("after") == before  # a further round keeps the record of the one before
    assert "seconds" not in rec  # a rebuild must give the same model.json
    assert meta["source"]["sha256"] == json.loads((DEFAULT / "model.json").read_text())["source"]["sha256"]
    assert "evaluation" not in meta["card"]  # the starting bundle's figures are not this one's
    for name in ("text_encoder.int8.onnx", "dense_encoder.onnx", "tokenizer.json"):
        assert _sha(new / name) == _sha(DEFAULT / name)
    assert _sha(new / "image_encoder.onnx") != _sha(DEFAULT / "image_encoder.onnx")
    stored = meta["parity"]["image_weight_storage"]  # what the default-model test holds the shipped bundle to
    assert stored["weight_storage"]["bytes_after"] == (new / "image_encoder.onnx").stat().st_size
    assert stored["cosine_min"] >= 0.9999 and meta["parity"]["image_cosine_min"] == stored["cosine_min"]

    from training.rotation_distill import export

    again = export(out / "checkpoint_epoch2.pt", DEFAULT, tmp_path / "again")  # an earlier epoch, written anew
    assert _sha(again / "image_encoder.onnx") == _sha(out / "bundle_epoch2" / "image_encoder.onnx")
    assert (json.loads((again / "model.json").read_text())
            == json.loads((out / "bundle_epoch2" / "model.json").read_text()))
    with pytest.raises(ValueError, match="another image encoder"):
        export(out / "checkpoint_epoch2.pt", out / "bundle_epoch1", tmp_path / "wrong")

    # every quarter turn of the training images, one view each: closer to the four-turn ensemble than before
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "scenes").glob("*/*.png"))]
    teacher = load_model(DEFAULT, rotations=4).encode_images(images)
    gaps = {}
    for name, folder in (("before", DEFAULT), ("after", new)):
        m = load_model(folder)
        views = [m.encode_images([np.rot90(im, k) for im in images]) for k in range(4)]
        gaps[name] = float(np.mean([1 - (v * teacher).sum(-1).mean() for v in views]))
    assert gaps["after"] < 0.75 * gaps["before"], gaps

    with pytest.raises(FileExistsError, match="--resume"):
        run(cfg, DEFAULT, out, log=lambda s: None)
    assert run(cfg, DEFAULT, out, resume=True, log=lambda s: None) == []  # every epoch done: nothing left

    # a second run of the same config from the same bundle: the same bytes (the shipped bundle must rebuild)
    twin = tmp_path / "twin"
    run(cfg, DEFAULT, twin, log=lambda s: None)
    for name in ("image_encoder.onnx", "model.json"):
        assert _sha(twin / f"bundle_epoch{EPOCHS}" / name) == _sha(new / name), name


def test_centre_crop_is_the_centred_square():
    from training.rotation_distill import centre_crop

    yy, xx = np.mgrid[0:60, 0:100]
    img = np.stack([yy, xx, yy * 0], -1)
    crop = centre_crop(img, 0.5)  # side 30 of the shorter side 60, centred in 60 x 100
    assert crop.shape == (30, 30, 3)
    assert (crop[0, 0, 0], crop[0, 0, 1]) == (15, 35) and (crop[-1, -1, 0], crop[-1, -1, 1]) == (44, 64)


@pytest.mark.parametrize("crops", ["0.8", "[1.0]", "[0]", "[true]", '["0.8"]'])
def test_bad_teacher_crops_are_refused(tmp_path, crops):
    from training.config import ConfigError
    from training.rotation_distill import load_config

    cfg = tmp_path / "distill.toml"
    cfg.write_text(f"teacher_crops = {crops}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="teacher_crops"):
        load_config(cfg)


def test_crop_views_and_their_teacher(tmp_path):
    """The crop view is cut from the decoded image before resizing; the teacher averages every turn of every view."""
    from PIL import Image

    from training.rotation_distill import centre_crop, teacher_embeddings, training_images

    _scene_training_config(tmp_path)
    cfg = {"datasets_from": str(tmp_path / "train.toml"), "seed": 0, "teacher_crops": [0.5],
           "data": {"max_per_source": 0}}
    one = load_model(DEFAULT)
    views, counts = training_images(cfg, one.bundle.image.size, one.preprocess.resize)
    assert counts == {"scenes": 12} and len(views) == 2
    first = np.asarray(Image.open(tmp_path / "scenes" / "fields" / "fields_0.png").convert("RGB"))
    assert np.array_equal(views[1][0], one.preprocess.resize(centre_crop(first, 0.5)))  # not a crop of the 160 px view
    assert np.array_equal(views[0][0], one.preprocess.resize(first))

    four = load_model(DEFAULT, rotations=4)
    got = teacher_embeddings(four, views, batch=5)
    x = [np.stack([one.preprocess.normalize(im) for im in v]) for v in views]
    turns = [one.encode_images(np.ascontiguousarray(np.rot90(v, k, axes=(2, 3)))) for v in x for k in range(4)]
    want = np.mean(turns, axis=0)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(teacher_embeddings(four, views[:1]), four.encode_images(x[0]), atol=1e-6)  # = --rotations 4
    assert (got * teacher_embeddings(four, views[:1])).sum(1).min() < 0.999  # the crop view changes the target


def test_epoch_views_are_drawn_after_order_and_turns():
    """Drawing a view per image leaves each epoch's order and turns as they were (earlier runs rebuild byte for
    byte), draws every view, and is the same on a resumed run."""
    from training.rotation_distill import epoch_batches

    one = list(epoch_batches(640, 64, 0, 2))
    two = list(epoch_batches(640, 64, 0, 2, n_views=2))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(one, two))
    assert all(not a[2].any() for a in one)
    picks = np.concatenate([b[2] for b in two])
    assert set(picks.tolist()) == {0, 1} and 0.4 < picks.mean() < 0.6
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(two, epoch_batches(640, 64, 0, 2, n_views=2)))
    assert not np.array_equal(picks, np.concatenate([b[2] for b in epoch_batches(640, 64, 0, 3, n_views=2)]))


@pytest.mark.parametrize("text", ["student_sees_crops = true\n", 'student_sees_crops = "yes"\nteacher_crops = [0.8]\n'])
def test_student_crops_need_teacher_crops(tmp_path, text):
    from training.config import ConfigError
    from training.rotation_distill import load_config

    cfg = tmp_path / "distill.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="student_sees_crops"):
        load_config(cfg)


def test_a_student_that_sees_crops_trains_on_them(tmp_path):
    """Same teacher, same steps: the student fed crop views ends elsewhere than the whole-view student, and its
    bundle records that it saw them (its config is the whole-view one as ``base`` plus that switch, and the record
    names that base and its hash)."""
    from training.rotation_distill import run

    _scene_training_config(tmp_path)
    (tmp_path / "whole.toml").write_text(f'datasets_from = "{tmp_path / "train.toml"}"\nteacher_crops = [0.6]\n'
                                         f'[data]\nmax_per_source = 10\n[train]\nepochs = 1\nbatch = 5\nlr = {LR}\n',
                                         encoding="utf-8")
    (tmp_path / "crops.toml").write_text('base = "whole.toml"\nstudent_sees_crops = true\n', encoding="utf-8")
    shas, records = {}, {}
    for name in ("whole", "crops"):
        cfg = tmp_path / f"{name}.toml"
        out = tmp_path / name
        (rec,) = run(cfg, DEFAULT, out, log=lambda s: None)
        assert rec["epoch"] == 1 and rec["images"] == {"scenes": 10}
        records[name] = json.loads((out / "bundle_epoch1" / "model.json").read_text())["source"]["rotation_distill"]
        shas[name] = _sha(out / "bundle_epoch1" / "image_encoder.onnx")
        assert _sha(out / "teacher.npz") == _sha(tmp_path / "whole" / "teacher.npz")  # one teacher for both
    assert shas["whole"] != shas["crops"]
    assert records["crops"]["student_sees_crops"] is True and "student_sees_crops" not in records["whole"]
    assert records["crops"]["teacher_crops"] == records["whole"]["teacher_crops"] == [0.6]
    assert records["crops"]["config_bases"] == [{"config": str(tmp_path / "whole.toml"),
                                                 "sha256": _sha(tmp_path / "whole.toml")}]
    assert "config_bases" not in records["whole"]
    log = [json.loads(line) for line in (tmp_path / "crops" / "log.jsonl").read_text().splitlines()]
    assert "environment" in log[0] and [r["epoch"] for r in log[1:]] == [1]
