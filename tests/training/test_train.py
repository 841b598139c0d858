"""Training loop, loss and split: a tiny real model trains one step on real AID images."""

from __future__ import annotations

import json
import math
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("transformers")

from training.data.aid import HOLDOUT_FRACTION, SPLIT_FILE, UNSEEN_CLASSES, list_classes, load_split, make_split  # noqa: E402
from training.losses import multi_positive_infonce  # noqa: E402

TRAIN_CLASSES = ("Forest", "Parking", "Port")


def _tiny_text_tower(folder):
    """A 2-layer, 32-wide BERT with MiniLM's WordPiece tokenizer files (random weights)."""
    from transformers import BertConfig, BertModel

    from training.model import minilm_dir

    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    """Tiny model config, a 12-image AID split and a TOML training config, all in a temp folder."""
    tmp = tmp_path_factory.mktemp("tiny_train")
    text_dir = _tiny_text_tower(tmp / "tinybert")
    model_json = tmp / "tiny_model.json"
    model_json.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "linear", "image_size": 64},
        "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                     "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "context_length": 32},
    }))
    aid = shared_data / "aid"
    split = {"unseen_classes": list(UNSEEN_CLASSES),
             "train": {c: sorted(p.name for p in (aid / c).glob("*.jpg"))[:4] for c in TRAIN_CLASSES}}
    (tmp / "split.json").write_text(json.dumps(split))
    toml = tmp / "tiny.toml"
    toml.write_text(f"""
seed = 1
[model]
config = "{model_json}"
image_size = 64
context_length = 32
pretrained_image = false
[[datasets]]
kind = "aid"
root = "{aid}"
split = "{tmp / 'split.json'}"
[optim]
lr = 1e-3
trunk_lr = 1e-4
warmup_steps = 0
[train]
epochs = 1
batch_size = 12
samples_per_epoch = 12
[eval]
every = 0
""")
    probe_toml = tmp / "tiny_probe.toml"
    probe_toml.write_text(toml.read_text() + "[probe]\nsteps = 3\n")
    return tmp, toml


def test_probe_stage_trains_only_the_head(tiny_run):
    from training.train import main

    tmp, toml = tiny_run
    out = tmp / "probe_run"
    main(["--config", str(tmp / "tiny_probe.toml"), "--out", str(out), "--cache", str(tmp / "cache")])
    probe = torch.load(out / "checkpoint_probe.pt", map_location="cpu", weights_only=False)["state_dict"]
    ft = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)["state_dict"]
    from training.config import load_config
    from training.setup import build_run_model
    from training.train import seed_everything

    seed_everything(1)  # the config's seed: the same initial weights as the run
    init = build_run_model(load_config(toml), None)[0].state_dict()
    assert not torch.equal(probe["visual.head.proj.weight"], init["visual.head.proj.weight"])
    trunk = [k for k in probe if k.startswith("visual.trunk.") and probe[k].is_floating_point()]
    assert all(torch.equal(probe[k], init[k]) for k in trunk if "running" not in k)  # trunk frozen in probe
    assert not all(torch.equal(probe[k], ft[k]) for k in trunk)  # fine-tuning then moves it


def test_wise_interpolation_and_alpha_rule():
    from training.wise import choose_alpha, interpolate

    a = {"w": torch.zeros(2), "n": torch.tensor(1)}
    b = {"w": torch.ones(2), "n": torch.tensor(5)}
    mixed = interpolate(a, b, 0.25)
    assert torch.allclose(mixed["w"], torch.full((2,), 0.25)) and mixed["n"].item() == 5
    assert choose_alpha({0.5: 0.93, 0.75: 0.95, 1.0: 0.955}, 0.01) == 0.75
    assert choose_alpha({0.5: 0.90, 0.75: 0.93, 1.0: 0.955}, 0.01) == 1.0


def test_one_step_changes_weights_and_lowers_batch_loss(tiny_run):
    from training.augment import AugmentConfig
    from training.config import load_config
    from training.loop import make_batch
    from training.optim import make_optimizer
    from training.setup import build_run_model, text_fully_locked
    from training.sources import build_sources
    from training.text_bank import TextBank
    from training.train import REPO_ROOT

    tmp, toml = tiny_run
    cfg = load_config(toml)
    torch.manual_seed(0)
    model, tokenizer, _ = build_run_model(cfg, None)
    assert text_fully_locked(model)  # default: LiT, text tower frozen
    sources = build_sources(cfg["datasets"], REPO_ROOT)
    assert len(sources[0]) == 12
    bank = TextBank(model, tokenizer, locked=True)
    batch = [(0, i) for i in range(12)]
    x, captions, groups = make_batch(batch, sources, 64, AugmentConfig(), torch.Generator().manual_seed(0))
    assert x.shape == (12, 3, 64, 64) and groups.unique().numel() == 3
    opt = make_optimizer(model, cfg["optim"])
    model.train()
    model.text.eval()

    def batch_loss():
        return multi_positive_infonce(model.encode_image(x, normalize=True), bank.lookup(captions, "cpu"),
                                      groups, model.logit_scale.exp())

    before_w = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = batch_loss()
    opt.zero_grad()
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1 = batch_loss()
    after_w = model.state_dict()
    changed = [k for k in before_w if not torch.equal(before_w[k], after_w[k])]
    assert "visual.head.proj.weight" in changed and any(k.startswith("visual.trunk.") for k in changed)
    assert not any(k.startswith("text.") for k in changed)  # locked tower untouched
    assert loss1.item() < loss0.item()


def test_train_cli_writes_checkpoint_and_resumes(tiny_run):
    from training.train import main

    tmp, toml = tiny_run
    out = tmp / "run"
    main(["--config", str(toml), "--out", str(out), "--cache", str(tmp / "cache")])
    ckpt = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert {"epoch", "name", "state_dict", "optimizer"} <= set(ckpt) and ckpt["epoch"] == 1
    resolved = json.loads((out / "model_config.json").read_text())
    assert resolved["model_cfg"]["vision_cfg"]["timm_model_name"] == "test_efficientnet"
    assert resolved["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5]  # what export must record
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r and math.isfinite(r["loss"]) for r in lines)

    toml2 = tmp / "tiny2.toml"
    toml2.write_text(toml.read_text().replace("epochs = 1", "epochs = 2"))
    main(["--config", str(toml2), "--out", str(out), "--resume", str(out / "checkpoint_last.pt"),
          "--cache", str(tmp / "cache")])
    ckpt2 = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ckpt2["epoch"] == 2
    assert not torch.equal(ckpt["state_dict"]["visual.head.proj.weight"], ckpt2["state_dict"]["visual.head.proj.weight"])
    # one environment record per start (the resumed start may be another machine): versions, CPU, kernel level
    envs = [json.loads(line)["environment"] for line in (out / "log.jsonl").read_text().splitlines()
            if "environment" in json.loads(line)]
    assert len(envs) == 2
    assert envs[0]["packages"]["torch"] == torch.__version__.split("+")[0]
    assert envs[0]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert envs[0]["torch_threads"] == 2 and envs[0]["cpu_count"] >= 1
    # same machine, same thread count: the same rounding, so the same fingerprint at both starts
    assert envs[0]["kernel_fingerprint"] == envs[1]["kernel_fingerprint"]


def test_kernel_fingerprint_is_seeded_and_leaves_the_global_random_stream_alone():
    """Computing it at a run's start must not move the run's own random draws (it would change every run)."""
    from training.environment import kernel_fingerprint

    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = kernel_fingerprint()
    assert torch.equal(torch.get_rng_state(), before)
    assert first == kernel_fingerprint() and len(first) == 16 and int(first, 16) >= 0
    assert kernel_fingerprint(seed=1) != first  # it hashes the computation, not a constant


def test_multi_positive_loss_matches_hand_computation():
    """3 items, groups (0, 0, 1): rows 0 and 1 each have two positives with weight 1/2."""
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
    scale = 2.0
    sims = [[sum(a * b for a, b in zip(i, t)) * scale for t in txt.tolist()] for i in img.tolist()]
    pos = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]

    def direction(s):
        total = 0.0
        for r in range(3):
            lse = math.log(sum(math.exp(v) for v in s[r]))
            total += -sum(pos[r][c] / sum(pos[r]) * (s[r][c] - lse) for c in range(3))
        return total / 3

    expected = 0.5 * (direction(sims) + direction([list(col) for col in zip(*sims)]))
    got = multi_positive_infonce(img, txt, torch.tensor([0, 0, 1]), torch.tensor(scale))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # all-distinct groups reduce to standard CLIP (one-hot) InfoNCE
    clip = 0.5 * (torch.nn.functional.cross_entropy(scale * img @ txt.t(), torch.arange(3))
                  + torch.nn.functional.cross_entropy(scale * txt @ img.t(), torch.arange(3)))
    assert multi_positive_infonce(img, txt, torch.arange(3), torch.tensor(scale)).item() == pytest.approx(clip.item())


def test_committed_split_is_fixed_and_excludes_unseen(shared_data):
    split = load_split()
    assert set(split["unseen_classes"]) == set(UNSEEN_CLASSES)
    assert not set(UNSEEN_CLASSES) & (set(split["train"]) | set(split["val"]))
    assert set(split["unseen"]) == set(UNSEEN_CLASSES)
    folders = list_classes(shared_data / "aid")
    assert len(split["train"]) == len(split["val"]) == 24
    for name, files in split["train"].items():
        held = split["val"][name]
        assert not set(files) & set(held)
        assert sorted(files + held) == folders[name]
        assert len(held) == round(HOLDOUT_FRACTION * len(folders[name]))
    assert make_split(shared_data / "aid") == split, f"{SPLIT_FILE} differs from a fresh deterministic split"


def test_training_captions_never_name_unseen_classes():
    """The held-out-classes ablation (v1 split): captions of its 24 training classes never name a held-out
    class; the v2 split trains all 30, each with its own phrases."""
    from training.data.aid import SPLIT30_FILE
    from training.data.aid_captions import AID_PHRASES, check_no_unseen_words, class_captions

    assert set(AID_PHRASES) == set(load_split(SPLIT30_FILE)["train"])
    for name in load_split()["train"]:
        check_no_unseen_words(class_captions(name, description_share=0.5))
    for name in UNSEEN_CLASSES:
        with pytest.raises(ValueError, match="unseen"):
            check_no_unseen_words(class_captions(name))
    with pytest.raises(ValueError, match="unseen"):
        check_no_unseen_words(["a satellite photo of a sandy beach."])


def test_text_bank_cache_survives_a_restart(tiny_run, monkeypatch):
    """A locked text tower's caption embeddings are saved once and reloaded, identical, without encoding."""
    from training import text_bank
    from training.config import load_config
    from training.setup import build_run_model

    tmp, toml = tiny_run
    model, tokenizer, model_cfg = build_run_model(load_config(toml), None)
    cache = tmp / "bank_cache" / text_bank.text_cache_name(model_cfg)
    caps = ["a forest", "a port with ships", "a parking lot"]
    first = text_bank.TextBank(model, tokenizer, locked=True, cache_file=cache)
    first.precompute(caps)
    assert cache.is_file()
    monkeypatch.setattr(text_bank, "encode_texts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded")))
    second = text_bank.TextBank(model, tokenizer, locked=True, cache_file=cache)
    second.precompute(list(reversed(caps)))
    assert torch.equal(second.lookup(caps, "cpu"), first.lookup(caps, "cpu"))
    other = dict(model_cfg, text_cfg={**model_cfg["text_cfg"], "context_length": 16})
    assert text_bank.text_cache_name(other) != cache.name


def test_training_is_bit_identical_and_resume_matches_a_straight_run(tiny_run):
    """The same config trains the same weights to the bit, and stopping after epoch 1 and resuming gives the
    weights of an uninterrupted run: what lets `training.train --config default.toml` reproduce the bundle."""
    from training.train import main

    tmp, toml = tiny_run
    two = tmp / "two_epochs.toml"
    two.write_text(toml.read_text().replace("epochs = 1", "epochs = 2"))
    runs = {}
    for name in ("a", "b"):
        main(["--config", str(two), "--out", str(tmp / f"straight_{name}"), "--cache", str(tmp / "cache")])
        runs[name] = torch.load(tmp / f"straight_{name}" / "checkpoint_last.pt", map_location="cpu",
                                weights_only=False)["state_dict"]
    out = tmp / "stopped"
    main(["--config", str(toml), "--out", str(out), "--cache", str(tmp / "cache")])
    main(["--config", str(two), "--out", str(out), "--resume", str(out / "checkpoint_last.pt"),
          "--cache", str(tmp / "cache")])
    runs["resumed"] = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)["state_dict"]
    trained = [k for k, v in runs["a"].items() if v.is_floating_point()]
    assert trained and set(runs["a"]) == set(runs["b"]) == set(runs["resumed"])
    for k in trained:
        assert torch.equal(runs["a"][k], runs["b"][k]), f"{k}: two runs of one config differ"
        assert torch.equal(runs["a"][k], runs["resumed"][k]), f"{k}: resumed run differs from the straight run"


@pytest.mark.parametrize("name", ["default", "tower_lite0", "ablation_no_scene_sets", "ablation_heldout_classes",
                                  "ablation_input128", "ablation_no_class_bank"])
def test_shipped_training_configs_parse_and_name_committed_lists(name):
    """The recipes the model card cites load, and every split / exclusion / phrase file they name is in the repo
    (data paths under $RSCLIP_DATA are fetched, so only their form is checked)."""
    from pathlib import Path

    from training.config import load_config
    from training.sources import BUILDERS

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "training" / "configs" / f"{name}.toml")
    assert cfg["train"]["epochs"] >= 1 and cfg["datasets"]
    for spec in cfg["datasets"]:
        assert spec["kind"] in BUILDERS
        for key in ("split", "exclude", "include", "phrases"):
            if key in spec and not str(spec[key]).startswith("$RSCLIP_DATA"):
                assert (repo / spec[key]).is_file(), f"{name}.toml {spec.get('name')}: {key} {spec[key]} missing"
        for key in ("root", "csv", "images"):
            if key in spec and spec["kind"] != "aid":
                assert str(spec[key]).startswith("$RSCLIP_DATA/"), f"{name}.toml: fetched data outside $RSCLIP_DATA"


def test_class_bank_loss_scores_every_class_of_the_set():
    """Cross-entropy over all class prototypes, by hand; an image on its own class's prototype has the lower loss."""
    from training.losses import class_bank_loss

    protos = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    img = torch.tensor([[0.6, 0.8]])
    scale = torch.tensor(10.0)
    logits = scale * img @ protos.t()
    want = -(logits[0, 1] - torch.logsumexp(logits[0], dim=0))
    assert torch.isclose(class_bank_loss(img, protos, torch.tensor([1]), scale), want)
    assert class_bank_loss(img, protos, torch.tensor([2]), scale) < class_bank_loss(img, protos, torch.tensor([0]), scale)


def test_class_prototypes_and_batch_loss_use_only_scene_class_sources(tiny_run):
    """Prototypes exist for class sources only (AID here; a caption set has none), each the normalised mean of its
    class's caption embeddings, and the batch loss averages over the class items it holds."""
    from training.config import load_config
    from training.loop import batch_class_bank_loss
    from training.losses import class_bank_loss
    from training.setup import build_run_model
    from training.sources import Source, build_sources
    from training.text_bank import TextBank, class_prototypes
    from training.train import REPO_ROOT

    tmp, toml = tiny_run
    cfg = load_config(toml)
    torch.manual_seed(0)
    model, tokenizer, _ = build_run_model(cfg, None)
    aid = build_sources(cfg["datasets"], REPO_ROOT)[0]
    assert aid.classes
    caps = Source("caps", 1.0, aid.images[:2], ["caps:a", "caps:b"], {"caps:a": ["a port"], "caps:b": ["a forest"]})
    bank = TextBank(model, tokenizer, locked=True)
    protos = class_prototypes(bank, [caps, aid])
    assert set(protos) == {1} and sorted(protos[1].rows) == [f"aid:{c}" for c in TRAIN_CLASSES]
    forest = protos[1].embeddings[protos[1].rows["aid:Forest"]]
    mean = bank.lookup(aid.captions["aid:Forest"], "cpu").mean(dim=0)
    assert torch.allclose(forest, mean / mean.norm(), atol=1e-6)

    batch = [(0, 0), (1, 0), (1, 5), (0, 1)]
    img = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    got = batch_class_bank_loss(batch, [caps, aid], protos, img, torch.tensor(5.0))
    targets = torch.tensor([protos[1].rows[aid.groups[0]], protos[1].rows[aid.groups[5]]])
    assert torch.isclose(got, class_bank_loss(img[[1, 2]], protos[1].embeddings, targets, torch.tensor(5.0)))
    assert batch_class_bank_loss([(0, 0), (0, 1)], [caps, aid], protos, img[:2], torch.tensor(5.0)) is None
    with pytest.raises(ValueError, match="locked text tower"):
        class_prototypes(TextBank(model, tokenizer, locked=False), [aid])


def test_class_bank_weight_changes_the_trained_weights(tiny_run):
    """The option is wired into the epoch: the same config with class_bank_weight > 0 trains other weights."""
    from training.train import main

    tmp, toml = tiny_run
    bank_toml = tmp / "tiny_bank.toml"
    bank_toml.write_text(toml.read_text().replace("samples_per_epoch = 12", "samples_per_epoch = 12\nclass_bank_weight = 1.0"))
    weights = {}
    for name, path in (("plain", toml), ("bank", bank_toml)):
        main(["--config", str(path), "--out", str(tmp / f"bank_{name}"), "--cache", str(tmp / "cache")])
        weights[name] = torch.load(tmp / f"bank_{name}" / "checkpoint_last.pt", map_location="cpu",
                                   weights_only=False)["state_dict"]["visual.head.proj.weight"]
    assert not torch.equal(weights["plain"], weights["bank"])


def test_probe_stage_does_not_depend_on_train_or_augment(tiny_run):
    """The model card reuses one run's probe checkpoint in another (--probe-from) when only [train] / [augment]
    differ: the probe stage must then come out the same, weight for weight."""
    from training.train import main

    tmp, _ = tiny_run
    probe_toml = tmp / "tiny_probe.toml"
    other = tmp / "tiny_probe_other.toml"
    other.write_text(probe_toml.read_text().replace("samples_per_epoch = 12",
                                                    "samples_per_epoch = 12\nclass_bank_weight = 1.0")
                     + "[augment]\nscale_min = 0.7\n")
    probes = {}
    for name, path in (("plain", probe_toml), ("other", other)):
        main(["--config", str(path), "--out", str(tmp / f"probe_same_{name}"), "--cache", str(tmp / "cache")])
        probes[name] = torch.load(tmp / f"probe_same_{name}" / "checkpoint_probe.pt", map_location="cpu",
                                  weights_only=False)["state_dict"]
    assert set(probes["plain"]) == set(probes["other"])
    for k, v in probes["plain"].items():
        assert torch.equal(v, probes["other"][k]), f"{k}: the probe stage depends on [train] / [augment]"


def test_config_base_overlays_tables_and_replaces_lists(tmp_path):
    """A config with ``base`` is its base with its own keys laid over: a table merges key by key (the base's other
    keys stay), a list such as [[datasets]] replaces the base's whole list; the chain is what a run records."""
    from training.config import base_chain, load_config

    (tmp_path / "sub").mkdir()
    (tmp_path / "root.toml").write_text(
        'seed = 3\n[train]\nepochs = 7\nbatch_size = 16\n[augment]\nscale_min = 0.5\n'
        '[[datasets]]\nname = "a"\nkind = "aid"\n[[datasets]]\nname = "b"\nkind = "aid"\n')
    (tmp_path / "sub" / "mid.toml").write_text('base = "../root.toml"\n[train]\nepochs = 2\n')
    (tmp_path / "sub" / "top.toml").write_text('base = "mid.toml"\n[augment]\nscale_min = 0.7\n'
                                               '[[datasets]]\nname = "c"\nkind = "folder"\n')
    top = load_config(tmp_path / "sub" / "top.toml")
    assert top["seed"] == 3 and top["train"]["epochs"] == 2 and top["train"]["batch_size"] == 16
    assert top["augment"]["scale_min"] == 0.7 and top["augment"]["flip"] is True  # flip: DEFAULTS, not lost
    assert [d["name"] for d in top["datasets"]] == ["c"]
    assert "base" not in top
    mid = load_config(tmp_path / "sub" / "mid.toml")
    assert [d["name"] for d in mid["datasets"]] == ["a", "b"] and mid["augment"]["scale_min"] == 0.5
    assert base_chain(tmp_path / "sub" / "top.toml") == [tmp_path / "sub" / "mid.toml",
                                                          tmp_path / "sub" / "../root.toml"]
    assert base_chain(tmp_path / "root.toml") == []


@pytest.mark.parametrize("body, message", [
    ('base = "missing.toml"\n', "'base' file"),
    ('base = 3\n', "'base' must be the path"),
    ('base = "loop_b.toml"\n', "loops back"),
])
def test_config_base_errors_name_the_file(tmp_path, body, message):
    from training.config import ConfigError, load_config

    (tmp_path / "loop_b.toml").write_text('base = "loop_a.toml"\n')
    (tmp_path / "loop_a.toml").write_text(body)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "loop_a.toml")
    assert "loop_a.toml" in str(err.value)


def test_config_base_keys_are_checked_like_the_files_own(tmp_path):
    """An unknown key or a value of the wrong kind inherited through ``base`` fails as it would in the file itself."""
    from training.config import ConfigError, load_config

    (tmp_path / "root.toml").write_text('[train]\nepochz = 1\n[[datasets]]\nkind = "aid"\n')
    (tmp_path / "top.toml").write_text('base = "root.toml"\n')
    with pytest.raises(ConfigError, match="unknown key train.'epochz'"):
        load_config(tmp_path / "top.toml")
    (tmp_path / "root.toml").write_text('[[datasets]]\nkind = "aid"\n')
    (tmp_path / "top.toml").write_text('base = "root.toml"\n[train]\nepochs = "four"\n')
    with pytest.raises(ConfigError, match="'train.epochs' must be a number"):
        load_config(tmp_path / "top.toml")


def test_variant_configs_differ_from_their_base_only_where_they_say():
    """The committed variants that inherit resolve to their base with the one change their header names."""
    from pathlib import Path

    from training.config import DEFAULTS, load_config

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    default = load_config(configs / "default.toml")
    variants = {  # file: {(table, key): (its value, default.toml's value)}
        "ablation_crop_scale05.toml": {("augment", "scale_min"): (0.5, 0.7)},  # v2.4 / v2.5's main run
        "ablation_no_class_bank.toml": {("train", "class_bank_weight"): (0.0, 0.5),  # v2.3: v2.4's recipe
                                        ("augment", "scale_min"): (0.5, 0.7)},      # without the class bank
        "long_schedule.toml": {("train", "epochs"): (6, 4)},  # candidate: 6 epochs
        "default_seed1.toml": {(None, "seed"): (1, 0)},  # soup ingredient: v2.6's run with another seed
    }
    assert any(default["recipe"].values())  # the product's config, and the only one with the bundle's recipe
    default["recipe"] = DEFAULTS["recipe"]
    for name, changes in variants.items():
        variant = load_config(configs / name)
        for (table, key), (own, base) in changes.items():
            mine, theirs = (variant, default) if table is None else (variant[table], default[table])
            assert mine[key] == own and theirs[key] == base, (name, table, key)
            mine[key] = base
        assert variant == default, name
