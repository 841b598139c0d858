"""The dense head: ``models export --dense`` on tiny real open_clip models (a timm conv tower and a ViT).

Checks torch vs onnxruntime on windows larger than the model input (dynamic H/W), that the mean of a conv tower's
cells is its image embedding, that MaskCLIP cells of a one-block ViT only see their own patch, model.json
validation of the ``dense`` section, and the float16-stored weights (the default, ``--dense-weights fp16``) against
fp32 ones (``--dense-weights fp32``, the ``conv32`` bundle) and the conversion of an existing fp32 head.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")

from click.testing import CliRunner  # noqa: E402

from rsclip_geo.runtime.bundle import read_bundle  # noqa: E402
from rsclip_geo.cli import main  # noqa: E402
from rsclip_geo.runtime.encoder import load_model  # noqa: E402
from rsclip_geo.errors import BundleError  # noqa: E402
from rsclip_geo.export import export_checkpoint  # noqa: E402

pytestmark = pytest.mark.export

TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
CONFIGS = {
    "conv": {"embed_dim": 16, "text_cfg": TEXT_CFG,
             "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                            "timm_pool": "avg", "timm_proj": "linear", "image_size": 64}},
    "vit": {"embed_dim": 16, "text_cfg": TEXT_CFG,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8}},
    "conv32": {"embed_dim": 16, "text_cfg": TEXT_CFG,
               "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                              "timm_pool": "avg", "timm_proj": "linear", "image_size": 64}},
    "vit1": {"embed_dim": 16, "text_cfg": TEXT_CFG,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}},
}
WINDOW_CELLS = {"conv": None, "conv32": None, "vit": 8, "vit1": 8}  # None: the default, the model's input size
DENSE_WEIGHTS = {"conv32": "fp32"}  # the others: the default, fp16-stored


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (torch model, bundle folder) exported with --dense."""
    work = tmp_path_factory.mktemp("dense_export")
    out = {}
    for i, (family, cfg) in enumerate(CONFIGS.items()):
        config = work / f"tiny-dense-{family}.json"
        config.write_text(json.dumps(cfg))
        open_clip.add_model_config(config)
        torch.manual_seed(200 + i)
        model = open_clip.create_model(config.stem, pretrained_text=False, force_quick_gelu=True).eval()
        g = torch.Generator().manual_seed(3)
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        ckpt = work / f"{family}.pt"
        torch.save(model.state_dict(), ckpt)
        folder = work / f"bundle-{family}"
        export_checkpoint(str(config), ckpt, folder, activation="quick_gelu", dense=True,
                          dense_window_cells=WINDOW_CELLS[family], dense_weights=DENSE_WEIGHTS.get(family, "fp16"))
        out[family] = (model, folder)
    return out


def _torch_dense(model, x: np.ndarray) -> np.ndarray:
    """The conv tower's reference: trunk features, then the projection Linear on every cell."""
    with torch.no_grad():
        f = model.visual.trunk.forward_features(torch.from_numpy(x))
        return model.visual.head.proj(f.permute(0, 2, 3, 1)).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("family", ["conv32", "conv"])
def test_conv_dense_head_is_the_projection_of_every_cell(exported, family):
    model, folder = exported[family]
    bundle = read_bundle(folder)
    assert bundle.dense is not None and bundle.dense.method == "conv-projection"
    assert (bundle.dense.stride, bundle.dense.window, bundle.dense.cells) == (32, 64, 2)
    assert (folder / "dense_encoder.onnx").is_file()
    p = bundle.dense.parity
    assert p["cosine_min"] >= 0.9999 and p["pooled_vs_image_cosine_min"] >= 0.9999
    assert p["window_sizes"] == ["64x64", "128x128", "64x128"]
    # the bar follows the weight storage: rounded float16 weights are held to the float16 bar, fp32 to 0.9999
    from rsclip_geo.export.weight_storage import FP16_STORED_MIN_COSINE

    want = 0.9999 if family == "conv32" else FP16_STORED_MIN_COSINE
    assert p["min_cosine_required"] == want and FP16_STORED_MIN_COSINE < 0.9999

    clip = load_model(folder, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 96, 160)).astype(np.float32)  # not a size seen at export, non-square
    cells = clip.encode_dense(x)
    assert cells.shape == (2, 3, 5, 16)
    want = _torch_dense(model, x)
    if family == "conv32":
        assert bundle.dense.weights == "fp32"
        np.testing.assert_allclose(cells, want, rtol=1e-4, atol=1e-4)
    else:  # float16-stored weights: float16 rounding, not more, and not the fp32 result bit for bit
        assert bundle.dense.weights == "fp16-stored"
        assert _cosines(cells, want).min() >= 0.9999
        err = np.abs(cells - want).max() / np.abs(want).max()
        assert 1e-7 < err < 5e-3, err


@pytest.mark.parametrize("family", ["conv32", "conv"])
def test_mean_of_conv_cells_is_the_image_embedding(exported, family):
    _, folder = exported[family]
    clip = load_model(folder, device="cpu")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    batch = clip.preprocess(images)
    pooled = clip.encode_dense(batch).mean(axis=(1, 2))
    image = clip.encode_images(batch, normalize=False)  # the fp32 image encoder
    if family == "conv32":
        np.testing.assert_allclose(pooled, image, rtol=1e-4, atol=1e-5)
    else:
        assert _cosines(pooled, image).min() >= 0.9999


def test_fp16_stored_dense_head_is_smaller_and_recorded(exported):
    """Same model, same export, only --dense-weights differs: the fp16 head has half-size weights, casts, and
    model.json says so; the fp32 bundle's model.json has no 'weights' (as bundles written before it)."""
    _, fp16 = exported["conv"]
    _, fp32 = exported["conv32"]
    size16, size32 = (f / "dense_encoder.onnx" for f in (fp16, fp32))
    assert size16.stat().st_size < 0.6 * size32.stat().st_size
    storage = read_bundle(fp16).dense.parity["weight_storage"]
    assert storage["initializers"] > 0 and storage["bytes_after"] == size16.stat().st_size
    assert json.loads((fp16 / "model.json").read_text())["dense"]["weights"] == "fp16-stored"
    assert "weights" not in json.loads((fp32 / "model.json").read_text())["dense"]
    assert "weight_storage" not in read_bundle(fp32).dense.parity
    # the image encoder is not touched by --dense-weights
    assert (fp16 / "image_encoder.onnx").stat().st_size == (fp32 / "image_encoder.onnx").stat().st_size


def test_existing_fp32_head_is_converted_without_torch(exported, tmp_path):
    from rsclip_geo.export.weight_storage import store_bundle_dense_fp16

    model, src = exported["conv32"]
    folder = tmp_path / "bundle"
    shutil.copytree(src, folder)
    before = read_bundle(folder)
    dense = store_bundle_dense_fp16(folder)
    after = read_bundle(folder)
    assert after.dense.weights == dense["weights"] == "fp16-stored"
    p = after.dense.parity
    assert p["cosine_min"] >= 0.9999 and p["pooled_vs_image_cosine_min"] >= 0.9999
    assert "fp32" in p["compared_to"] and p["fp32_vs_torch"] == before.dense.parity
    assert p["window_sizes"] == ["64x64", "128x128", "64x128"]
    assert (folder / "dense_encoder.onnx").stat().st_size < 0.6 * (src / "dense_encoder.onnx").stat().st_size
    # everything else in model.json is as it was
    assert {**after.to_dict(), "dense": None} == {**before.to_dict(), "dense": None}
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 128)).astype(np.float32)
    assert _cosines(load_model(folder, device="cpu").encode_dense(x), _torch_dense(model, x)).min() >= 0.9999
    with pytest.raises(BundleError, match="already 'fp16-stored'"):
        store_bundle_dense_fp16(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in src.iterdir())  # no temp files left


def test_image_encoder_weights_stored_fp16_keep_the_embeddings(exported, tmp_path):
    from rsclip_geo.export.weight_storage import store_bundle_image_fp16

    _, src = exported["conv32"]
    folder = tmp_path / "bundle"
    shutil.copytree(src, folder)
    before = read_bundle(folder)
    x = np.random.default_rng(5).standard_normal((3, 3, before.image.size, before.image.size)).astype(np.float32)
    model_before = load_model(folder, device="cpu")
    emb_before = model_before.encode_batch(x)
    record = store_bundle_image_fp16(folder)
    after = read_bundle(folder)
    assert after.image_weights == "fp16-stored" and after.parity["image_weight_storage"] == record
    assert json.loads((folder / "model.json").read_text())["image_weights"] == "fp16-stored"
    assert "image_weights" not in json.loads((src / "model.json").read_text())  # fp32 bundles keep their model.json
    assert record["cosine_min"] >= 0.9999 and record["weight_storage"]["initializers"] > 0
    assert (folder / "image_encoder.onnx").stat().st_size < 0.6 * (src / "image_encoder.onnx").stat().st_size
    model_after = load_model(folder, device="cpu")
    assert _cosines(model_after.encode_batch(x), emb_before).min() >= 0.9999
    assert model_after.fingerprint != model_before.fingerprint  # indexes of the fp32 encoder are not reused
    with pytest.raises(BundleError, match="already 'fp16-stored'"):
        store_bundle_image_fp16(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in src.iterdir())  # no temp files left


def test_image_weights_field_is_validated(tiny_bundle, tmp_path):
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    doc = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**doc, "image_weights": "bf16"}))
    with pytest.raises(BundleError, match="'image_weights' must be one of"):
        read_bundle(folder)


def test_converting_a_bundle_without_dense_head_fails_clearly(tiny_bundle, tmp_path):
    from rsclip_geo.export.weight_storage import store_bundle_dense_fp16

    with pytest.raises(BundleError, match="no dense head"):
        store_bundle_dense_fp16(tiny_bundle)


def test_vit_maskclip_runs_on_larger_windows(exported):
    model, folder = exported["vit"]
    bundle = read_bundle(folder)
    assert bundle.dense.method == "vit-maskclip"
    assert (bundle.dense.stride, bundle.dense.window) == (8, 64)
    assert bundle.dense.parity["cosine_min"] >= 0.9999
    assert bundle.dense.parity["window_sizes"] == ["32x32", "64x64", "32x64"]
    clip = load_model(folder, device="cpu")
    x = np.random.default_rng(2).standard_normal((1, 3, 48, 80)).astype(np.float32)
    cells = clip.encode_dense(x)
    assert cells.shape == (1, 6, 10, 16) and np.isfinite(cells).all()
    # the cells are not the global embedding repeated: they differ from each other
    assert np.std(cells.reshape(-1, 16), axis=0).mean() > 1e-3
    with pytest.raises(ValueError, match="multiples of 8"):
        clip.encode_dense(x[:, :, :44])


def test_maskclip_cells_of_a_one_block_vit_see_only_their_own_patch(exported):
    """With the only block's attention value-only, changing one patch changes that cell alone."""
    _, folder = exported["vit1"]
    clip = load_model(folder, device="cpu")
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    y = x.copy()
    y[:, :, 16:24, 40:48] += 1.0  # patch row 2, col 5
    a, b = clip.encode_dense(x)[0], clip.encode_dense(y)[0]
    changed = np.abs(a - b).max(axis=-1) > 1e-5
    assert changed[2, 5] and changed.sum() == 1


def test_cli_export_dense(exported, tmp_path):
    _, folder = exported["vit"]
    config = next(folder.parent.glob("tiny-dense-vit.json"))
    out = tmp_path / "cli-bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(main, ["models", "export", "--arch", str(config), "--checkpoint",
                                           str(folder.parent / "vit.pt"), "-o", str(out), "--activation",
                                           "quick_gelu", "--dense", "--dense-window", "6"])
    assert result.exit_code == 0, result.output
    assert "dense vit-maskclip stride 8 window 48" in result.output and "weights fp16-stored" in result.output
    data = json.loads((out / "model.json").read_text())
    assert data["dense"]["file"] == "dense_encoder.onnx" and data["dense"]["window"] == 48
    assert data["dense"]["weights"] == "fp16-stored" and data["dense"]["parity"]["cosine_min"] >= 0.9999

    args = ["models", "export", "--arch", str(config), "--checkpoint", str(folder.parent / "vit.pt"),
            "--activation", "quick_gelu", "--dense"]
    bad = CliRunner().invoke(main, args + ["-o", str(tmp_path / "bad"), "--dense-weights", "int8"])
    assert bad.exit_code == 2 and "--dense-weights" in bad.output and not (tmp_path / "bad").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = CliRunner().invoke(main, args + ["-o", str(tmp_path / "fp32"), "--dense-weights", "fp32"])
    assert plain.exit_code == 0, plain.output
    assert "weights fp32" in plain.output
    assert "weights" not in json.loads((tmp_path / "fp32" / "model.json").read_text())["dense"]
    assert (out / "dense_encoder.onnx").stat().st_size < (tmp_path / "fp32" / "dense_encoder.onnx").stat().st_size


def test_dense_section_is_validated(exported, tmp_path):
    _, folder = exported["conv"]
    data = json.loads((folder / "model.json").read_text())

    def check(mutate, message):
        d = json.loads(json.dumps(data))
        mutate(d["dense"])
        bad = tmp_path / f"b{len(list(tmp_path.iterdir()))}"
        bad.mkdir()
        for f in folder.iterdir():
            if f.name != "model.json":
                shutil.copy(f, bad / f.name)
        (bad / "model.json").write_text(json.dumps(d))
        with pytest.raises(BundleError, match=message):
            read_bundle(bad)

    check(lambda d: d.update(method="pixels"), "dense.method")
    check(lambda d: d.update(window=100), "dense.window")
    check(lambda d: d.update(window=32), "dense.window")  # below image.size 64
    check(lambda d: d.update(window=8 * 10**6), "<= 8192 pixels")  # one window of 64 x 10^12 pixels
    check(lambda d: d.update(stride=0), "dense.stride")
    check(lambda d: d.pop("stride"), "missing field 'dense.stride'")
    check(lambda d: d.update(file="nothing_here.onnx"), "nothing_here.onnx: missing")
    check(lambda d: d.update(weights="int4"), "dense.weights' must be one of")
    check(lambda d: d.update(weights=16), "dense.weights' must be a string")
    for weights in ("fp32", "fp16-stored"):  # both are read; fp32 is what a missing field means
        d = json.loads(json.dumps(data))
        d["dense"]["weights"] = weights
        ok = tmp_path / f"ok-{weights}"
        shutil.copytree(folder, ok)
        (ok / "model.json").write_text(json.dumps(d))
        assert read_bundle(ok).dense.weights == weights
    d = json.loads(json.dumps(data))
    d["dense"].pop("weights", None)
    (ok / "model.json").write_text(json.dumps(d))
    assert read_bundle(ok).dense.weights == "fp32" and "weights" not in read_bundle(ok).to_dict()["dense"]


def test_bundles_without_dense_keep_their_model_json(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    assert bundle.dense is None and "dense" not in bundle.to_dict()
    clip = load_model(tiny_bundle, device="cpu")
    assert not clip.has_dense
    with pytest.raises(BundleError, match="no dense head"):
        clip.encode_dense(np.zeros((1, 3, 16, 16), np.float32))
