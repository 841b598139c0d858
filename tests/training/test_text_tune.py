"""The text-tuning stage end to end from the shipped default bundle with MiniLM's released text tower put back
(tiny data, a few steps): only the text encoder changes, the captions it was tuned on move towards their images,
a resumed run ends where an uninterrupted one does, and exporting the run's text tower writes the same bundle
again."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from rsclip_geo.runtime.encoder import load_model  # noqa: E402

DEFAULT = Path(__file__).resolve().parents[2] / "rsclip_geo" / "models" / "default"
CAPTIONS = {"water": ["a dark lake with a straight shore", "calm blue water beside a field"],
            "field": ["green crop fields in long stripes", "farmland with a small road across it"],
            "roofs": ["many red roofs packed along narrow streets", "a dense block of houses"],
            "sand": ["pale bare sand with a few tracks", "an empty desert plain"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _image(kind: str, i: int) -> np.ndarray:
    rng = np.random.default_rng([i, len(kind)])
    base = {"water": (30, 60, 120), "field": (70, 140, 50), "roofs": (170, 60, 50), "sand": (220, 200, 150)}[kind]
    img = np.clip(np.array(base) + rng.integers(-25, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
    if kind == "field":
        img[::8] = (40, 90, 30)
    if kind == "roofs":
        img[:, ::6] = (90, 90, 90)
    return img


def _data(tmp_path: Path) -> Path:
    """A training config with a caption set (8 images, VT-RSBS CSV) and a 2-class scene folder."""
    import csv

    from PIL import Image

    images = tmp_path / "cap_images"
    images.mkdir()
    rows = []
    for k, (kind, caps) in enumerate(CAPTIONS.items()):
        for i in range(2):
            name = f"{kind}_{i}.png"
            Image.fromarray(_image(kind, i)).save(images / name)
            rows.append([len(rows), name, "train", kind, repr(caps)])
    with (tmp_path / "captions.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["", "filename", "split", "label", "sentence"], *rows])
    for kind in ("water", "sand"):
        (tmp_path / "scenes" / kind).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(_image(kind, 10 + i)).save(tmp_path / "scenes" / kind / f"{kind}{i}.png")
    (tmp_path / "train.toml").write_text(
        f'[[datasets]]\nname = "caps"\nkind = "captions"\ncsv = "{tmp_path / "captions.csv"}"\n'
        f'images = "{images}"\n\n[[datasets]]\nname = "scenes"\nkind = "folder"\nroot = "{tmp_path / "scenes"}"\n',
        encoding="utf-8")
    cfg = tmp_path / "tune.toml"
    cfg.write_text(f'datasets_from = "{tmp_path / "train.toml"}"\n[train]\nsteps = 4\nbatch = 8\nlayers = 1\n'
                   'lr = 1e-3\nwarmup_steps = 1\nclass_batch = 6\nclass_captions = 2\nlog_every = 2\nsave_every = 2\n',
                   encoding="utf-8")
    return cfg


def _caption_loss(bundle: Path) -> float:
    """Mean InfoNCE (text -> image) of every training caption against the 8 captioned images, through the runtime."""
    model = load_model(bundle)
    images = np.stack([model.encode_images([_image(kind, i)])[0] for kind in CAPTIONS for i in range(2)])
    losses = []
    for k, caps in enumerate(CAPTIONS.values()):
        for text in caps:
            logits = model.bundle.logit_scale * images @ model.encode_text([text])[0]
            logits -= logits.max()
            log_p = logits - np.log(np.exp(logits).sum())
            losses.append(-np.mean(log_p[2 * k:2 * k + 2]))
    return float(np.mean(losses))


def _untuned_bundle(folder: Path) -> Path:
    """The shipped bundle as it was before its text tuning: its image encoder, dense head and tokenizer with
    MiniLM's released text tower (exported by the stage's own writer) and no text-tuning record."""
    from training.text_tune import text_tower, write_bundle

    meta = json.loads((DEFAULT / "model.json").read_text())
    meta["source"].pop("text_tune", None)
    start = folder / "start"
    shutil.copytree(DEFAULT, start)
    (start / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    model, _, cfg = text_tower(meta)
    write_bundle(model, cfg, start, folder / "untuned", {})
    meta = json.loads((folder / "untuned" / "model.json").read_text())
    del meta["source"]["text_tune"]
    (folder / "untuned" / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder / "untuned"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from training.text_tune import run

    tmp_path = tmp_path_factory.mktemp("text_tune")
    cfg = _data(tmp_path)
    start = _untuned_bundle(tmp_path)
    record = run(cfg, start, tmp_path / "run", log=lambda s: None)
    return tmp_path, cfg, record, start


def test_only_the_text_encoder_changes_and_is_recorded(tuned):
    tmp_path, cfg, record, start = tuned
    new = tmp_path / "run" / "bundle"
    for name in ("image_encoder.onnx", "dense_encoder.onnx", "tokenizer.json"):
        assert _sha(new / name) == _sha(DEFAULT / name), name
    assert _sha(new / "text_encoder.int8.onnx") != _sha(start / "text_encoder.int8.onnx")
    assert not (new / "MODEL_CARD.md").exists()  # the starting bundle's card describes another model
    meta = json.loads((new / "model.json").read_text())
    rec = meta["source"]["text_tune"]
    assert rec["from_text_encoder_sha256"] == _sha(start / "text_encoder.int8.onnx")
    assert rec["image_encoder_sha256"] == _sha(DEFAULT / "image_encoder.onnx")
    assert rec["images"] == {"caps": 8, "scenes": 6} and rec["steps"] == 4 and rec["layers"] == 1
    assert rec["config_sha256"] == _sha(cfg) and "seconds" not in rec
    shipped = json.loads((start / "model.json").read_text())
    assert meta["logit_scale"] == shipped["logit_scale"] and meta["dense"] == shipped["dense"]
    assert meta["source"]["rotation_distill"] == shipped["source"]["rotation_distill"]
    assert "evaluation" not in meta["card"]  # the starting bundle's figures are not this one's
    assert meta["parity"]["text_cosine_min"] >= 0.9999  # the exported fp32 graph is the tuned torch tower
    assert 0.8 < meta["parity"]["int8"]["text_cosine_min"] <= 1


def test_tuned_captions_move_towards_their_images(tuned):
    tmp_path, _, _, start = tuned
    before, after = _caption_loss(start), _caption_loss(tmp_path / "run" / "bundle")
    assert after < before - 0.05, (before, after)


def test_resumed_run_ends_where_an_uninterrupted_one_does(tuned):
    import torch

    from training.text_tune import run

    tmp_path, cfg, record, start = tuned
    out = tmp_path / "resumed"
    part = run(cfg, start, out, log=lambda s: None, stop_after=2)
    assert part["stopped_after"] == 2 and not (out / "bundle").exists()
    with pytest.raises(FileExistsError):
        run(cfg, start, out, log=lambda s: None)
    lines: list[str] = []
    again = run(cfg, start, out, resume=True, log=lines.append)
    assert again["final_losses"] == record["final_losses"]
    assert sum("reused" in line for line in lines) == 2  # both sources' image embeddings, not embedded again
    a = torch.load(tmp_path / "run" / "text_tower.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "text_tower.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_writes_the_run_bundle_again(tuned, tmp_path):
    from training.text_tune import export

    tmp, _, _, start = tuned
    again = export(tmp / "run" / "text_tower.pt", start, tmp_path / "again")
    for f in sorted((tmp / "run" / "bundle").iterdir()):
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name
    with pytest.raises(ValueError, match="another text encoder"):
        export(tmp / "run" / "text_tower.pt", DEFAULT, tmp_path / "wrong")
    # a tuned bundle (the shipped one too) cannot start another tuning: its tower is not readable from int8
    from training.text_tune import text_tower

    for tuned_bundle in (tmp / "run" / "bundle", DEFAULT):
        with pytest.raises(ValueError, match="tuned already"):
            text_tower(json.loads((tuned_bundle / "model.json").read_text()))
