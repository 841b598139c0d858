"""Export of real (tiny, randomly initialised) open_clip models to ONNX bundles.

Three families cover the tower kinds open_clip builds: a ViT (open_clip's own
transformers), a ModifiedResNet image tower, and a timm image tower with a
Hugging Face (BERT) text tower whose tokenizer.json is built here. Nothing is
downloaded. Each family is exported once per module.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("transformers")

from rsclip_geo.runtime.bundle import read_bundle  # noqa: E402
from rsclip_geo.errors import BundleError, MissingDependencyError, OutputError  # noqa: E402
from rsclip_geo.export import export_checkpoint, load_checkpoint_state  # noqa: E402
from rsclip_geo.export.arch import decide_activation  # noqa: E402

pytestmark = pytest.mark.export

MIN_COS = 0.9999
TEXT_CFG = {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIGS = {
    "vit": {"embed_dim": 16, "text_cfg": TEXT_CFG,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8}},
    "resnet": {"embed_dim": 16, "text_cfg": TEXT_CFG,
               "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}},
    "timm_hf": {"embed_dim": 16,
                "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                               "timm_pool": "avg", "timm_proj": "linear", "image_size": 32},
                "text_cfg": {"hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler", "context_length": 24}},
}
ACTIVATION = {"vit": "quick_gelu", "resnet": "gelu", "timm_hf": None}
RECORDED_ACTIVATION = {"vit": "quick_gelu", "resnet": "gelu", "timm_hf": ""}
EXPORT_LAYOUT = {"vit": "jit", "resnet": "training", "timm_hf": "plain"}
LAYOUTS = {"vit": ("plain", "training", "ddp", "jit", "safetensors"),
           "resnet": ("plain", "training", "ddp"),
           "timm_hf": ("plain", "training", "safetensors")}
WORDS = ("a an the of with and in on at photo satellite image aerial view overhead top down remote sensing "
         "high resolution many houses dense sparse medium residential area forest river airport farmland parking "
         "lot harbour bridge port beach desert").split()
NEW_TEXTS = ["farmland", "a satellite photo of a harbour with many boats.",
             "an aerial view of a dense residential area next to a river and a forest and an airport.", "",
             "bridge"]


def _make_bert(folder: Path) -> None:
    """A tiny BERT config + WordPiece tokenizer.json, written the way save_pretrained does."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(WORDS)) + list(".,"))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.save(str(folder / "tokenizer.json"))
    BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64, pad_token_id=0).save_pretrained(folder)


def _randomise_batchnorm(model) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))


def _save(model, path: Path, layout: str) -> Path:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if layout == "plain":
        torch.save(state, path)
    elif layout == "ddp":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif layout == "training":  # what open_clip's training loop writes (DDP run)
        torch.save({"epoch": 3, "name": "tiny-run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}}, path)
    elif layout == "safetensors":
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif layout == "jit":  # like OpenAI's archives: a traced model with extra non-weight entries
        traced_src = copy.deepcopy(model).eval()
        for key, value in (("input_resolution", 32), ("context_length", 32), ("vocab_size", 49408)):
            traced_src.__dict__.pop(key, None)  # open_clip keeps some as plain ints
            traced_src.register_buffer(key, torch.tensor(value))
        image = torch.randn(2, 3, 32, 32)
        ids = torch.randint(1, 1000, (2, TEXT_CFG["context_length"]))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and torch.jit deprecation warnings
            traced = torch.jit.trace_module(traced_src, {"encode_image": (image,), "encode_text": (ids,)})
            torch.jit.save(traced, str(path))
    else:
        raise ValueError(layout)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def families(workdir):
    """family -> dict(config=path, model=torch model, checkpoints={layout: path})."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        bert = workdir / "tiny-bert"
        _make_bert(bert)
        out = {}
        for i, (family, cfg) in enumerate(CONFIGS.items()):
            cfg = json.loads(json.dumps(cfg))
            if family == "timm_hf":
                cfg["text_cfg"].update(hf_model_name=str(bert), hf_tokenizer_name=str(bert))
            config = workdir / f"tiny-{family.replace('_', '-')}.json"
            config.write_text(json.dumps(cfg))
            open_clip.add_model_config(config)
            torch.manual_seed(100 + i)
            model = open_clip.create_model(config.stem, pretrained_text=False,
                                           force_quick_gelu=ACTIVATION[family] == "quick_gelu").eval()
            _randomise_batchnorm(model)
            ckpts = {layout: _save(model, workdir / f"{family}-{layout}.pt", layout) for layout in LAYOUTS[family]}
            out[family] = {"config": config, "model": model, "checkpoints": ckpts}
        yield out


@pytest.fixture(scope="module")
def bundles(families, workdir):
    """family -> exported ModelBundle (each family exported once, from a different checkpoint layout)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        out = {}
        for family, f in families.items():
            out[family] = export_checkpoint(
                str(f["config"]), f["checkpoints"][EXPORT_LAYOUT[family]], workdir / f"bundle-{family}",
                activation=ACTIVATION[family], name=f"tiny-{family}", license="test-only")
        yield out


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _tokenizer(bundle):
    from rsclip_geo.runtime.tokenizers import load_tokenizer

    return load_tokenizer(bundle.text, bundle.tokenizer_path)


def _no_partials(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


# ---- checkpoint layouts ---------------------------------------------------------
@pytest.mark.parametrize("family,layout", [(f, lay) for f, lays in LAYOUTS.items() for lay in lays])
def test_checkpoint_layouts_load_to_the_same_weights(families, family, layout):
    from rsclip_geo.export.checkpoint import load_strict

    f = families[family]
    state = load_checkpoint_state(f["checkpoints"][layout])
    assert not any(k.startswith("module.") for k in state)
    assert not {"input_resolution", "context_length", "vocab_size"} & set(state)
    fresh = open_clip.create_model(f["config"].stem, pretrained_text=False,
                                   force_quick_gelu=ACTIVATION[family] == "quick_gelu")
    load_strict(fresh, state, f["config"].stem, f["checkpoints"][layout])
    expected = f["model"].state_dict()
    got = fresh.state_dict()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_unreadable_checkpoints_are_named(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(BundleError, match="junk.pt"):
        load_checkpoint_state(junk)
    no_tensors = tmp_path / "meta.pt"
    torch.save({"epoch": 1, "args": {"lr": 0.1}}, no_tensors)
    with pytest.raises(BundleError, match="not tensors"):
        load_checkpoint_state(no_tensors)
    with pytest.raises(BundleError, match="does not exist"):
        load_checkpoint_state(tmp_path / "missing.pt")


# ---- exported bundles -----------------------------------------------------------
@pytest.mark.parametrize("family", list(CONFIGS))
def test_export_parity_and_model_json(bundles, families, family):
    bundle = bundles[family]
    p = bundle.parity
    assert p["image_cosine_min"] >= MIN_COS and p["text_cosine_min"] >= MIN_COS
    assert p["text_batch_consistency_min"] >= MIN_COS
    assert p["n_images"] >= 4 and p["n_texts"] > 200
    assert "images" in p["inputs"] and "texts" in p["inputs"]
    again = read_bundle(bundle.root)  # valid model.json, every named file present
    assert again == bundle
    data = json.loads((bundle.root / "model.json").read_text())
    assert data["activation"] == RECORDED_ACTIVATION[family]
    assert data["architecture"] == f"tiny-{family.replace('_', '-')}"
    assert data["embed_dim"] == 16 and data["name"] == f"tiny-{family}"
    assert data["image"]["size"] == CONFIGS[family]["vision_cfg"]["image_size"]
    assert data["image"]["mean"] == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN))
    assert data["text"]["tokenizer"] == ("hf_tokenizer_json" if family == "timm_hf" else "clip_bpe")
    assert data["logit_scale"] == pytest.approx(float(families[family]["model"].logit_scale.detach().exp()))
    assert data["source"]["sha256"] and data["license"] == "test-only"
    assert sorted(p.name for p in bundle.root.iterdir()) == sorted(
        ["model.json", "image_encoder.onnx", "text_encoder.onnx", bundle.text.tokenizer_file])
    assert not _no_partials(bundle.root.parent)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_onnx_equals_torch_on_new_inputs_and_batch_sizes(bundles, families, family):
    bundle, model = bundles[family], families[family]["model"]
    size = bundle.image.size
    rng = np.random.default_rng(7)
    img_sess, txt_sess = _session(bundle.image_encoder_path), _session(bundle.text_encoder_path)
    ids_all = _tokenizer(bundle)(NEW_TEXTS)
    for n in (1, 3, 5):  # exported with a batch of 2
        images = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            ref_img = model.encode_image(torch.from_numpy(images)).numpy()
            ref_txt = model.encode_text(torch.from_numpy(ids_all[:n])).numpy()
        got_img = img_sess.run(None, {"image": images})[0]
        got_txt = txt_sess.run(None, {"input_ids": ids_all[:n]})[0]
        assert got_img.shape == (n, 16) and got_txt.shape == (n, 16)
        assert _cos(ref_img, got_img).min() >= MIN_COS
        assert _cos(ref_txt, got_txt).min() >= MIN_COS
        np.testing.assert_allclose(got_img, ref_img, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got_txt, ref_txt, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_bundle_runs_in_the_torch_free_runtime(bundles, families, family):
    from rsclip_geo import load_model
    from rsclip_geo.runtime.preprocess import Preprocessor

    bundle, model = bundles[family], families[family]["model"]
    clip = load_model(bundle.root, device="cpu", batch_size=2)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for _ in range(3)]
    with torch.no_grad():
        ref_img = model.encode_image(torch.from_numpy(Preprocessor(bundle.image)(images))).numpy()
        ref_txt = model.encode_text(torch.from_numpy(_tokenizer(bundle)(NEW_TEXTS))).numpy()
    assert _cos(clip.encode_images(images), ref_img).min() >= MIN_COS
    assert _cos(clip.encode_text(NEW_TEXTS), ref_txt).min() >= MIN_COS
    assert clip.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


@pytest.mark.parametrize("family", list(CONFIGS))
def test_text_graph_takes_trimmed_ids_when_export_proved_it(bundles, family):
    """HF towers and open_clip's own causal text transformer (argmax pooling) export with a working dynamic
    sequence axis (checked at export), so the runtime cuts trailing padding."""
    from rsclip_geo import load_model

    bundle = bundles[family]
    clip = load_model(bundle.root, device="cpu")
    ids = _tokenizer(bundle)(NEW_TEXTS)
    trimmed = clip._trim(ids)
    assert bundle.text.dynamic_length is True
    assert bundle.parity["text_trimmed_cosine_min"] >= MIN_COS
    assert trimmed.shape[1] < ids.shape[1] and np.array_equal(trimmed, ids[:, :trimmed.shape[1]])
    assert (trimmed != bundle.text.pad_id).any(axis=0)[-1]  # nothing but padding was cut


# ---- open_clip's own text transformer: dynamic sequence length -----------------
EXACT_COS = 0.99999


def _seq_dim(path: Path):
    import onnx

    (ids,) = [i for i in onnx.load(str(path), load_external_data=False).graph.input if i.name == "input_ids"]
    dim = ids.type.tensor_type.shape.dim[1]
    return dim.dim_param if dim.HasField("dim_param") else dim.dim_value


@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_open_clip_text_transformer_runs_at_any_length(bundles, families, family):
    """Full-context, batch-trimmed and per-row-trimmed ids through onnxruntime == torch encode_text at full length;
    the graph's sequence axis is symbolic, and the runtime (which now trims) agrees with torch."""
    from rsclip_geo import load_model

    bundle, model = bundles[family], families[family]["model"]
    assert isinstance(_seq_dim(bundle.text_encoder_path), str)  # "seq", not a number
    ids = _tokenizer(bundle)(NEW_TEXTS)
    context = ids.shape[1]
    with torch.no_grad():
        ref = model.encode_text(torch.from_numpy(ids)).numpy()
    sess = _session(bundle.text_encoder_path)
    lengths = (ids != bundle.text.pad_id).sum(axis=1)
    longest = int(lengths.max())
    assert longest < context
    for n in (context, context - 1, longest + 3, longest):
        got = sess.run(None, {"input_ids": np.ascontiguousarray(ids[:, :n])})[0]
        assert _cos(got, ref).min() >= EXACT_COS, n
    for row, n in enumerate(lengths):
        got = sess.run(None, {"input_ids": np.ascontiguousarray(ids[row:row + 1, :max(1, int(n))])})[0]
        assert _cos(got, ref[row:row + 1])[0] >= EXACT_COS, NEW_TEXTS[row]
    clip = load_model(bundle.root, device="cpu")
    assert clip._trim(ids).shape[1] == longest
    assert _cos(clip.encode_text(NEW_TEXTS), ref).min() >= EXACT_COS
    single = clip.encode_text(["bridge"], normalize=False)  # 3 columns fed, not the context
    assert _cos(single, ref[NEW_TEXTS.index("bridge"):][:1])[0] >= EXACT_COS
    assert isinstance(model.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)  # restored after export


def test_custom_text_clip_text_transformer_is_dynamic_too(families, tmp_path):
    """CustomTextCLIP holds open_clip's TextTransformer as model.text: the same wrapper applies."""
    from rsclip_geo.export.onnx_export import dynamic_text_encoder, export_encoders

    cfg = {**json.loads(families["vit"]["config"].read_text()), "custom_text": True}
    config = tmp_path / "tiny-vit-custom-text.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    torch.manual_seed(5)
    model = open_clip.create_model(config.stem, force_quick_gelu=True).eval()
    assert type(model).__name__ == "CustomTextCLIP" and dynamic_text_encoder(model, 0) is not None
    rng = np.random.default_rng(0)
    ids = np.zeros((3, TEXT_CFG["context_length"]), np.int64)
    for row, n in enumerate((4, 9, 2)):
        ids[row, :n] = np.concatenate([[49406], rng.integers(1, 49000, n - 2), [49407]])
    image = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    export_encoders(model, image, ids[:2], tmp_path, "image.onnx", "text.onnx", pad_id=0)
    assert isinstance(_seq_dim(tmp_path / "text.onnx"), str)
    with torch.no_grad():
        ref = model.encode_text(torch.from_numpy(ids)).numpy()
    sess = _session(tmp_path / "text.onnx")
    for n in (TEXT_CFG["context_length"], 9):
        assert _cos(sess.run(None, {"input_ids": ids[:, :n]})[0], ref).min() >= EXACT_COS


@pytest.mark.parametrize("variant,text_cfg", [("last-pool", {"pool_type": "last"}),
                                              ("bidirectional", {"no_causal_mask": True})])
def test_text_transformer_where_trimming_is_not_exact_keeps_fixed_length(families, tmp_path, variant, text_cfg):
    """Pooling at the last position (a pad after trimming) or a bi-directional mask (pads are attended to):
    cutting padding would change the embedding, so the fixed-length export and no dynamic_length."""
    from rsclip_geo.export.onnx_export import dynamic_text_encoder

    cfg = json.loads(families["vit"]["config"].read_text())
    cfg["text_cfg"].update(text_cfg)
    config = tmp_path / f"tiny-vit-{variant}.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    torch.manual_seed(6)
    model = open_clip.create_model(config.stem, force_quick_gelu=True).eval()
    assert dynamic_text_encoder(model, 0) is None
    bundle = export_checkpoint(str(config), _save(model, tmp_path / f"{variant}.pt", "plain"), tmp_path / "b",
                               activation="quick_gelu", name=variant)
    assert bundle.text.dynamic_length is False and bundle.parity["text_trimmed_cosine_min"] is None
    assert bundle.parity["text_cosine_min"] >= MIN_COS  # the full-length graph is still right


def test_argmax_pooling_needs_padding_below_every_token(families):
    """argmax pooling finds EOT as the largest id: exact after trimming only if padding (id 0) is never larger."""
    from rsclip_geo.export.onnx_export import dynamic_text_encoder

    model = families["vit"]["model"]
    assert dynamic_text_encoder(model, 0) is not None
    assert dynamic_text_encoder(model, 49407) is None and dynamic_text_encoder(model, None) is None


def test_hf_attention_mask_is_computed_inside_the_graph(bundles, families):
    """Padded ids through ONNX == the same text without any padding through torch."""
    bundle, model = bundles["timm_hf"], families["timm_hf"]["model"]
    ids = _tokenizer(bundle)(NEW_TEXTS)
    onnx_out = _session(bundle.text_encoder_path).run(None, {"input_ids": ids})[0]
    for row, text in enumerate(NEW_TEXTS):
        n = int((ids[row] != bundle.text.pad_id).sum())
        assert n < ids.shape[1], f"{text!r} should be padded"
        with torch.no_grad():
            unpadded = model.encode_text(torch.from_numpy(ids[row:row + 1, :n])).numpy()
        assert _cos(onnx_out[row:row + 1], unpadded)[0] >= MIN_COS, text


# ---- activation -----------------------------------------------------------------
def test_activation_is_required_for_open_clip_towers(families, tmp_path):
    f = families["vit"]
    out = tmp_path / "never"
    with pytest.raises(BundleError, match=r"--activation quick_gelu") as err:
        export_checkpoint(str(f["config"]), f["checkpoints"]["plain"], out)
    assert "tiny-vit" in str(err.value) and "QuickGELU" in str(err.value)
    assert not out.exists() and not _no_partials(tmp_path)


def test_activation_rules():
    vit = {"vision_cfg": {}, "text_cfg": {}}
    quick = {"quick_gelu": True, "vision_cfg": {}, "text_cfg": {}}
    towers = {"vision_cfg": {"timm_model_name": "x"}, "text_cfg": {"hf_model_name": "y"}}
    half = {"vision_cfg": {"timm_model_name": "x"}, "text_cfg": {}}  # open_clip text transformer
    assert decide_activation("a", quick, None) == "quick_gelu"
    assert decide_activation("a", vit, "gelu") == "gelu"
    assert decide_activation("a", towers, None) == "" and decide_activation("a", towers, "quick_gelu") == ""
    with pytest.raises(BundleError, match="needs --activation"):
        decide_activation("a", half, None)
    with pytest.raises(BundleError, match="QuickGELU config"):
        decide_activation("ViT-B-32-quickgelu", quick, "gelu")
    with pytest.raises(BundleError, match="unknown activation"):
        decide_activation("a", vit, "relu")


# ---- refusals -------------------------------------------------------------------
def test_checkpoint_of_another_architecture_names_keys(families, tmp_path):
    out = tmp_path / "wrong"
    with pytest.raises(BundleError) as err:
        export_checkpoint(str(families["resnet"]["config"]), families["vit"]["checkpoints"]["plain"], out,
                          activation="gelu")
    msg = str(err.value)
    assert "tiny-resnet" in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "visual.layer1" in msg or "visual.attnpool" in msg  # a resnet key the ViT checkpoint lacks
    assert not out.exists() and not _no_partials(tmp_path)


def test_shape_mismatch_is_reported(families, tmp_path):
    cfg = json.loads(families["vit"]["config"].read_text())
    cfg["embed_dim"] = 8
    other = tmp_path / "tiny-vit-e8.json"
    other.write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="shape mismatches.*text_projection"):
        export_checkpoint(str(other), families["vit"]["checkpoints"]["plain"], tmp_path / "o",
                          activation="quick_gelu")


def test_unknown_architecture_suggests_names(families, tmp_path):
    with pytest.raises(BundleError, match="ViT-B-32"):
        export_checkpoint("ViT-B-3", families["vit"]["checkpoints"]["plain"], tmp_path / "o", activation="gelu")


def test_existing_output_is_refused(families, bundles):
    f = families["vit"]
    with pytest.raises(OutputError, match="already exists"):
        export_checkpoint(str(f["config"]), f["checkpoints"]["plain"], bundles["vit"].root, activation="quick_gelu")


def test_failed_parity_writes_no_bundle(families, tmp_path):
    f = families["resnet"]
    out = tmp_path / "strict"
    with pytest.raises(BundleError, match="does not reproduce the torch model"):
        export_checkpoint(str(f["config"]), f["checkpoints"]["plain"], out, activation="gelu", min_cosine=1.5)
    assert not out.exists() and not _no_partials(tmp_path)


def test_missing_torch_gives_install_hint(families, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'rsclip-geo\[export\]'"):
        export_checkpoint("ViT-B-32", families["vit"]["checkpoints"]["plain"], tmp_path / "o", activation="gelu")


def test_overwrite_replaces_only_an_old_bundle_never_the_inputs_folder(families, tmp_path):
    """`--checkpoint ckpts/x.pt -o ckpts --overwrite` once swapped the checkpoints folder for the bundle."""
    import shutil

    f = families["vit"]
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    ckpt = Path(shutil.copy(f["checkpoints"]["plain"], ckpts / "model.pt"))
    (ckpts / "model.json").write_text("{}")  # even one that looks like a bundle
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    for out, message in ((ckpts, "holds the input"), (home, "is not a model bundle")):
        with pytest.raises(OutputError, match=message):
            export_checkpoint(str(f["config"]), ckpt, out, activation="quick_gelu", overwrite=True)
    assert ckpt.read_bytes() == Path(f["checkpoints"]["plain"]).read_bytes()
    assert (home / "notes.txt").read_text() == "mine" and sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is replaced (a pull into a cache folder made earlier)
    assert export_checkpoint(str(f["config"]), ckpt, empty, activation="quick_gelu", overwrite=True).root == empty


# ---- int8 -----------------------------------------------------------------------
def test_int8_transformer_quantises_both_encoders_and_overwrites(families, tmp_path):
    from rsclip_geo import load_model

    f = families["vit"]
    out = tmp_path / "vit-int8"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (out / "model.json").write_text("{}")  # an old bundle: the only kind of folder --overwrite replaces
    bundle = export_checkpoint(str(f["config"]), f["checkpoints"]["plain"], out, activation="quick_gelu",
                               int8=True, overwrite=True)
    q = bundle.parity["int8"]
    assert q["image_quantized"] is True and q["text_quantized"] is True and q["ops"] == ["MatMul", "Gemm"]
    assert q["text_ops"] == ["MatMul", "Gemm", "Gather"]
    for key in ("image_cosine_min", "image_cosine_mean", "text_cosine_min", "text_cosine_mean"):
        assert 0.9 < q[key] <= 1.0 + 1e-9, (key, q[key])
    assert q["image_cosine_min"] <= q["image_cosine_mean"]
    assert (bundle.image_encoder, bundle.text_encoder) == ("image_encoder.int8.onnx", "text_encoder.int8.onnx")
    assert bundle.precision == {"image": "int8", "text": "int8"}
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["model.json", "image_encoder.int8.onnx", "text_encoder.int8.onnx",
                            "bpe_simple_vocab_16e6.txt.gz"])
    ops = {n.op_type for n in __import__("onnx").load(str(bundle.text_encoder_path)).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    clip = load_model(out, device="cpu")
    assert clip.encode_text(["a river"]).shape == (1, 16)


def test_int8_keeps_convolutional_image_encoder_fp32(families, tmp_path):
    f = families["resnet"]
    bundle = export_checkpoint(str(f["config"]), f["checkpoints"]["ddp"], tmp_path / "rn-int8", activation="gelu",
                               int8=True)
    q = bundle.parity["int8"]
    assert q["image_quantized"] is False and "image_cosine_min" not in q
    assert 0.9 < q["text_cosine_min"] <= q["text_cosine_mean"] <= 1.0 + 1e-9
    assert bundle.image_encoder == "image_encoder.onnx" and bundle.text_encoder == "text_encoder.int8.onnx"
    assert not (bundle.root / "text_encoder.onnx").exists()
    assert bundle.precision == {"image": "fp32", "text": "int8"}


# ---- fp16 (for CUDA; compared here on onnxruntime CPU) ------------------------------------
@pytest.mark.parametrize("family", ["timm_hf", "vit"])
def test_fp16_export_records_cpu_parity_and_runs(bundles, families, family, tmp_path, caplog):
    """timm_hf: 'same' padding and the HF attention mask cast to float inside the graph (kept fp32 by the
    conversion); vit: open_clip's own transformers. CUDA, the target, is not available in tests."""
    pytest.importorskip("onnxconverter_common")
    import onnx

    from rsclip_geo import load_model

    f = families[family]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        bundle = export_checkpoint(str(f["config"]), f["checkpoints"][EXPORT_LAYOUT[family]],
                                   tmp_path / f"{family}-fp16", activation=ACTIVATION[family], fp16=True)
    assert (bundle.image_encoder, bundle.text_encoder) == ("image_encoder.fp16.onnx", "text_encoder.fp16.onnx")
    assert bundle.precision == {"image": "fp16", "text": "fp16"} and bundle.card["fp16"] is True
    assert sorted(p.name for p in bundle.root.iterdir()) == sorted(
        ["model.json", "image_encoder.fp16.onnx", "text_encoder.fp16.onnx", bundle.text.tokenizer_file])
    for path in (bundle.image_encoder_path, bundle.text_encoder_path):
        graph = onnx.load(str(path)).graph
        assert onnx.TensorProto.FLOAT16 in {i.data_type for i in graph.initializer}
        assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    q = bundle.parity["fp16"]
    assert q["cpu_runs"] is True and "CUDA" in q["note"]
    for key in ("image_cosine_min", "text_cosine_min"):
        assert 0.999 <= q[key] <= 1.0 + 1e-9, (key, q[key])
    assert read_bundle(bundle.root) == bundle

    fp16 = load_model(bundle.root, device="cpu")
    fp32 = load_model(bundles[family].root, device="cpu")
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(3)]
    assert _cos(fp16.encode_images(images), fp32.encode_images(images)).min() > 0.999
    assert _cos(fp16.encode_text(NEW_TEXTS), fp32.encode_text(NEW_TEXTS)).min() > 0.999


def test_fp16_and_int8_exclude_each_other(families, tmp_path):
    f = families["resnet"]
    with pytest.raises(BundleError, match="exclude each other"):
        export_checkpoint(str(f["config"]), f["checkpoints"]["plain"], tmp_path / "both", activation="gelu",
                          int8=True, fp16=True)
    assert not (tmp_path / "both").exists()


# ---- CLI ------------------------------------------------------------------------
def test_cli_export_info_and_errors(families, bundles, tmp_path):
    from click.testing import CliRunner

    from rsclip_geo.cli import main

    f = families["resnet"]
    out = tmp_path / "cli-bundle"
    runner = CliRunner()
    res = runner.invoke(main, ["models", "export", "--arch", str(f["config"]), "--checkpoint",
                               str(f["checkpoints"]["training"]), "-o", str(out), "--activation", "gelu",
                               "--name", "cli-rn"])
    assert res.exit_code == 0, res.output
    assert "parity image cos min" in res.output and read_bundle(out).name == "cli-rn"

    res = runner.invoke(main, ["models", "info", str(bundles["timm_hf"].root)])
    assert res.exit_code == 0, res.output
    for text in ("tiny-timm_hf", "tiny-timm-hf", "embed dim: 16", "hf_tokenizer_json", "image_cosine_min=",
                 "precision: image fp32, text fp32",
                 "text_encoder.onnx", "logit scale", "tower-defined", "licence: test-only"):
        assert text in res.output, text

    res = runner.invoke(main, ["models", "export", "--arch", str(f["config"]), "--checkpoint",
                               str(f["checkpoints"]["plain"]), "-o", str(tmp_path / "x")])
    assert res.exit_code == 1
    assert "--activation" in res.stderr and "Traceback" not in res.output
    res = runner.invoke(main, ["models", "export", "--arch", str(f["config"]), "--checkpoint",
                               str(f["checkpoints"]["plain"]), "-o", str(out), "--activation", "gelu"])
    assert res.exit_code == 1 and "already exists" in res.stderr
    res = runner.invoke(main, ["models", "export", "--arch", str(f["config"]), "--checkpoint",
                               str(f["checkpoints"]["plain"]), "-o", str(tmp_path / "y"), "--activation", "gelu",
                               "--int8", "--fp16"])
    assert res.exit_code == 2 and "exclude each other" in res.output



# ---- preprocessing and pull ---------------------------------------------------------
def test_preprocessing_comes_from_config_file_tags_or_caller(families, tmp_path):
    from rsclip_geo.export.arch import build_model, preprocess_overrides

    hub_style = tmp_path / "open_clip_config.json"  # the layout of open_clip_config.json on the HF hub
    hub_style.write_text(json.dumps({"model_cfg": CONFIGS["resnet"], "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}}))
    built = build_model(str(hub_style), "gelu")
    assert (built.image.mean, built.image.std, built.image.interpolation) == ((0.5,) * 3, (0.25,) * 3, "bilinear")
    assert built.image.size == 64 and built.arch == "open_clip_config"
    given = build_model(str(families["resnet"]["config"]), "gelu", preprocess={"mean": (0.1, 0.2, 0.3),
                                                                               "std": (1, 1, 1)})
    assert given.image.mean == (0.1, 0.2, 0.3) and given.preprocess_source == "given by the caller"
    siglip, source = preprocess_overrides("ViT-B-16-SigLIP", {})
    assert tuple(siglip["mean"]) == (0.5, 0.5, 0.5) and "tags" in source
    assert preprocess_overrides("tiny-resnet", {}) == ({}, "open_clip defaults (OpenAI CLIP mean/std, bicubic)")


def test_pull_exports_a_cached_hub_file(families, tmp_path, monkeypatch):
    """`models pull` glue: a file already in the HF cache is exported with the catalog's facts, no network."""
    from rsclip_geo.hub import catalog
    from rsclip_geo.hub import pull as hub

    monkeypatch.setenv("RSCLIP_GEO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    entry = catalog.CatalogEntry(name="tiny-vit-entry", title="tiny", architecture=str(families["vit"]["config"]),
                                 activation="quick_gelu", license="test-licence", repo="someone/tiny",
                                 file="ckpt/tiny.pt")
    monkeypatch.setattr(catalog, "ENTRIES", catalog.ENTRIES + (entry,))
    snapshot = tmp_path / "cache" / "hf" / "models--someone--tiny" / "snapshots" / ("a" * 40)
    (snapshot / "ckpt").mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    torch.save(families["vit"]["model"].state_dict(), snapshot / "ckpt" / "tiny.pt")

    folder = hub.pull("tiny-vit-entry")
    assert folder == tmp_path / "cache" / "models" / "tiny-vit-entry"
    bundle = read_bundle(folder)
    assert (bundle.name, bundle.activation, bundle.license) == ("tiny-vit-entry", "quick_gelu", "test-licence")
    assert bundle.source["repo"] == "someone/tiny" and bundle.source["file"] == "ckpt/tiny.pt"
    assert bundle.source["url"] == "https://huggingface.co/someone/tiny/resolve/main/ckpt/tiny.pt"
    assert bundle.card["preprocess_source"] == "given by the caller"
    assert bundle.parity["image_cosine_min"] >= MIN_COS
    assert hub.pull("tiny-vit-entry") == folder  # second pull: reused
