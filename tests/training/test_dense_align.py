"""Dense alignment (training/dense_align.py): region labels from boxes, the loss, distillation, the export hook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.dense_align import (CellSet, auc, cell_figures, class_weights, dense_align_loss,  # noqa: E402
                                  scene_accuracy, split_images, train_projection)
from training.dense_labels import IGNORE, cell_labels, window_origins  # noqa: E402


def test_cell_labels_classes_background_edges_and_small_objects():
    boxes = [(0, (0, 0, 16, 8)),       # class 0 covering cells (0, 0) and (0, 1) exactly
             (1, (26, 26, 30, 30)),    # a class-1 object smaller than a cell, centred in cell (3, 3)
             (0, (0, 21, 8, 32)),      # class 0: 3/8 of cell (2, 0) (an edge, ignored), all of cell (3, 0)
             (1, (16, 0, 24, 8)), (0, (16, 0, 24, 3))]  # cell (0, 2): class 1 covers all, class 0 3/8 -> 1
    lab = cell_labels(boxes, 4, 4, 8, n_classes=2, min_cover=0.5)
    want = np.full((4, 4), 2)
    want[0, 0] = want[0, 1] = 0
    want[3, 3] = want[0, 2] = 1
    want[3, 0] = 0
    want[2, 0] = IGNORE
    np.testing.assert_array_equal(lab, want)
    assert lab.dtype == np.int8


def test_cell_labels_background_margin_and_bad_input():
    # a thin box covering 1/8 of each cell of row 1: ignored with background_max_cover 0, background with 0.2
    boxes = [(0, (0, 8, 96, 9))]
    assert (cell_labels(boxes, 2, 12, 8, 1)[1] == IGNORE).all()
    assert (cell_labels(boxes, 2, 12, 8, 1, background_max_cover=0.2) == 1).all()
    with pytest.raises(ValueError, match="box class 3"):
        cell_labels([(3, (0, 0, 8, 8))], 2, 2, 8, 2)
    with pytest.raises(ValueError, match="min_cover"):
        cell_labels([], 2, 2, 8, 2, min_cover=0.2, background_max_cover=0.3)


def test_window_origins_match_segment_plan():
    from rsclip_geo.tasks.dense_map import plan_windows

    for n in (1, 3, 4, 5, 9, 26):
        for step, overlap in ((1, 0.75), (2, 0.5), (4, 0.0)):
            plan = plan_windows(n * 8, 8, stride=8, scale=1.0, window=32, min_window=32, overlap=overlap)
            assert window_origins(n, 4, step) == list(plan.grids[0][1])  # the main grid's columns


def _problem(seed=0, n=600, c=12, d=6, k=2, bg=2):
    """Cells whose label is decided by which of k + 1 directions of the feature space they lean to."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k + 1, c)) * 2
    y = rng.integers(0, k + 1, n).astype(np.int8)  # k = background
    x = (centres[y] + rng.standard_normal((n, c))).astype(np.float32)
    text = rng.standard_normal((k + bg, d)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    w0 = (rng.standard_normal((d, c)) / np.sqrt(c)).astype(np.float32)
    return x, y, w0, text


CFG = {"steps": 150, "batch": 256, "lr": 1e-2, "weight_decay": 0.0, "distill_weight": 0.0, "balance": 0.5,
       "log_every": 10}


def test_training_lowers_the_loss_and_raises_accuracy():
    x, y, w0, text = _problem()
    w, hist = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None)
    assert hist[-1]["ce"] < 0.5 * hist[0]["ce"]
    img = np.zeros(len(y), np.int32)
    before = cell_figures(x @ w0.T, y, img, text, ["a", "b"])
    after = cell_figures(x @ w.T, y, img, text, ["a", "b"])
    assert after["accuracy"] > max(0.9, before["accuracy"] + 0.2)
    # deterministic: the same seed gives the same weights
    w2, _ = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None)
    np.testing.assert_array_equal(w, w2)


def test_distillation_keeps_cells_near_the_global_projection():
    x, y, w0, text = _problem(seed=1)

    def cos_to_global(weight):
        a, b = x @ weight.T, x @ w0.T
        return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))

    free, _ = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None)
    held, hist = train_projection(x, y, w0, text, 2, 20.0, {**CFG, "distill_weight": 5.0}, seed=0,
                                  log=lambda *_: None)
    assert cos_to_global(held) > cos_to_global(free) + 0.05
    assert hist[0]["distill"] == pytest.approx(0.0, abs=1e-6)  # starts at the global projection


def test_loss_ignores_unlabelled_cells_and_background_is_logsumexp():
    x, y, w0, text = _problem(seed=2, n=50)
    w, w0t = torch.from_numpy(w0).clone(), torch.from_numpy(w0)
    t = torch.from_numpy(text)
    ys = torch.from_numpy(y)
    full, _ = dense_align_loss(w, w0t, torch.from_numpy(x), ys, t, 2, 10.0, 0.0)
    masked = ys.clone()
    masked[:25] = IGNORE
    part, _ = dense_align_loss(w, w0t, torch.from_numpy(x), masked, t, 2, 10.0, 0.0)
    tail, _ = dense_align_loss(w, w0t, torch.from_numpy(x[25:]), ys[25:], t, 2, 10.0, 0.0)
    assert float(part) == pytest.approx(float(tail), rel=1e-6) and float(part) != pytest.approx(float(full))
    # reference cross-entropy with the background logit as log-sum-exp of the background prompts
    e = torch.nn.functional.normalize(torch.from_numpy(x) @ w.T, dim=-1)
    logits = 10.0 * e @ t.T
    ref = torch.cat([logits[:, :2], torch.logsumexp(logits[:, 2:], 1, keepdim=True)], 1)
    assert float(full) == pytest.approx(float(torch.nn.functional.cross_entropy(ref, ys.long())), rel=1e-5)


def test_class_weights_and_split():
    y = np.array([0, 0, 0, 1, 2, 2, IGNORE], np.int8)
    np.testing.assert_allclose(class_weights(y, 3, 0.0).numpy(), [1, 1, 1])
    w = class_weights(y, 4, 1.0).numpy()  # label 3 absent: weight 0
    assert w[3] == 0 and w[1] == pytest.approx(3 * w[0]) and w[:3].mean() == pytest.approx(1)
    val = split_images(20, 0.1, seed=0)
    assert val.sum() == 2 and np.array_equal(val, split_images(20, 0.1, seed=0))
    assert auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auc(np.array([0.5]), np.array([0.5])) == 0.5


def _tiny_conv_model(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    pytest.importorskip("timm")
    cfg = {"embed_dim": 16, "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                         "layers": 1},
           "vision_cfg": {"timm_model_name": "test_efficientnet", "timm_model_pretrained": False,
                          "timm_pool": "avg", "timm_proj": "linear", "image_size": 64}}
    config = tmp_path / "tiny-dense-tail.json"
    config.write_text(json.dumps(cfg))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    return open_clip.create_model(config.stem, pretrained_text=False).eval()


def test_window_zero_means_the_model_input_size_and_a_bad_window_is_named(tmp_path):
    from training.config import ConfigError
    from training.dense_align import DEFAULTS, resolve_window

    model = _tiny_conv_model(tmp_path)  # 64 px input, stride 32
    cfg = json.loads(json.dumps(DEFAULTS))
    assert cfg["data"]["window"] == 0 and resolve_window(cfg, model) == 64 and cfg["data"]["window"] == 64
    cfg["data"]["window"] = 128
    assert resolve_window(cfg, model) == 128  # an explicit window is kept
    cfg["data"]["window"] = 80
    with pytest.raises(ConfigError, match="multiple of the trunk's stride 32, got 80"):
        resolve_window(cfg, model)


def test_export_dense_with_a_trained_projection(tmp_path):
    model = _tiny_conv_model(tmp_path)
    from rsclip_geo.errors import BundleError
    from rsclip_geo.export import parity as par
    from rsclip_geo.export.dense import export_dense
    from rsclip_geo.export.onnx_export import export_encoders  # noqa: F401  (the export extra is present)

    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    image_file = tmp_path / "image.onnx"
    with torch.no_grad():
        torch.onnx.export(model.visual, (torch.from_numpy(images[:1]),), str(image_file), input_names=["image"],
                          output_names=["embedding"], dynamic_axes={"image": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    proj = model.visual.head.proj.weight
    trained = proj.detach().numpy() + 0.5 * rng.standard_normal(proj.shape).astype(np.float32)
    spec = export_dense(model, tmp_path, images, image_file, projection=trained)
    assert "trained" in spec.parity["projection"] and spec.parity["cosine_min"] >= 0.9999
    assert spec.parity["pooled_vs_image_cosine_min"] < 0.9999  # recorded, not required
    x = rng.standard_normal((1, 3, 64, 128)).astype(np.float32)
    out = par.ort_session(tmp_path / "dense_encoder.onnx").run(["embedding"], {"image": x})[0]
    with torch.no_grad():
        f = model.visual.trunk.forward_features(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out, f @ trained.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(BundleError, match="does not replace"):
        export_dense(model, tmp_path, images, image_file, projection=trained[:, :3])


def test_export_bundle_refuses_a_projection_for_another_checkpoint(tmp_path):
    from tests.utils.tiny_dense import build_tiny_dense_bundle
    from training.config import ConfigError
    from training.dense_align import export_bundle, sha256

    bundle = build_tiny_dense_bundle(tmp_path / "bundle")
    ckpt = tmp_path / "run" / "checkpoint_final.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not the checkpoint the projection was trained on")
    proj = tmp_path / "dense_projection.pt"
    torch.save({"weight": torch.zeros(4, 8), "checkpoint_sha256": "0" * 64}, proj)
    with pytest.raises(ConfigError, match="projection file"):
        export_bundle(proj, ckpt, bundle, tmp_path / "out")
    torch.save({"weight": torch.zeros(4, 8), "checkpoint_sha256": sha256(ckpt)}, proj)
    with pytest.raises(ConfigError, match="model.json source.sha256"):
        export_bundle(proj, ckpt, bundle, tmp_path / "out")
    torch.save({"nothing": 1}, proj)
    with pytest.raises(ConfigError, match="not a dense projection file"):
        export_bundle(proj, ckpt, bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_best_threshold_maximises_mean_f1():
    from training.dense_align import best_threshold

    grid = np.round(np.arange(0, 1.0001, 0.1), 4)
    a = (np.array([0.6, 0.7, 0.8]), np.array([0.1, 0.2, 0.55]))   # any value in (0.55, 0.6] separates a
    b = (np.array([0.45, 0.9]), np.array([0.3, 0.35]))          # any value in (0.35, 0.45] separates b
    value, f1 = best_threshold([a], grid)
    assert value == 0.6 and f1 == [1.0]
    value, f1 = best_threshold([a, b], grid)  # no single value separates both: 0.4 keeps all positives of both
    assert value == 0.4 and f1[1] == 1.0 and f1[0] == pytest.approx(6 / 7)


def test_lowest_threshold_keeping_precision_favours_recall():
    from training.dense_align import lowest_threshold_with_precision

    grid = np.round(np.arange(0, 1.0001, 0.1), 4)
    a = (np.array([0.35, 0.6, 0.7, 0.8]), np.array([0.1, 0.2, 0.55]))
    b = (np.array([0.45, 0.9]), np.array([0.3, 0.35, 0.38]))
    # up to 0.3 b keeps 3 false cells (precision 0.4); at 0.4 b is clean and a keeps 3 of 4 at precision 3 / 4
    value, rp = lowest_threshold_with_precision([a, b], grid, 0.5)
    assert value == 0.4 and rp[0] == (0.75, 0.75) and rp[1] == (1.0, 1.0)
    value, rp = lowest_threshold_with_precision([a], grid, 0.5)  # a alone: 0.0 already has 4 / 7 >= 0.5
    assert value == 0.0 and rp[0] == (1.0, pytest.approx(4 / 7))
    assert lowest_threshold_with_precision([a], grid, 0.7)[0] == 0.3  # 4 / 6 at 0.2 is too low, 4 / 5 at 0.3
    with pytest.raises(ValueError, match="no threshold"):
        lowest_threshold_with_precision([(np.array([0.1]), np.array([0.5, 0.6]))], grid, 0.9)


# ---- scene mosaics (training/dense_mosaics.py) ---------------------------------------------------------------------
def test_scene_cell_labels_majority_and_seams():
    from training.dense_mosaics import scene_cell_labels

    scene = np.zeros((16, 24), np.int16)
    scene[:, 12:] = 2        # a seam through the middle of cell column 1 (px 8..15): 4/8 of each side
    scene[8:, 20:] = 5       # cell (1, 2): columns 16..19 scene 2, 20..23 scene 5 -> 4/8 each
    lab = scene_cell_labels(scene, 8, min_cover=0.75)
    np.testing.assert_array_equal(lab, [[0, IGNORE, 2], [0, IGNORE, IGNORE]])
    lab = scene_cell_labels(scene, 8, min_cover=0.5)  # a half share is enough at 0.5 (the larger label wins)
    assert lab[0, 0] == 0 and lab[0, 2] == 2 and lab[1, 1] in (0, 2) and lab[1, 2] in (2, 5)
    with pytest.raises(ValueError, match="whole number"):
        scene_cell_labels(scene[:, :20], 8, 0.75)
    with pytest.raises(ValueError, match="min_cover"):
        scene_cell_labels(scene, 8, 0.4)


def test_make_canvas_places_scenes_and_cuts_at_the_offset():
    from training.dense_mosaics import make_canvas

    s, stride = 12, 4
    images = [np.full((s, s, 3), 10 * (i + 1), np.uint8) for i in range(4)]
    c = make_canvas(images, [3, 1, 0, 2], grid=2, scene_px=s, offset=(4, 6), stride=stride, min_cover=0.75)
    # canvas 24 px, cut at row 4 / col 6 -> 18 px left -> 4 whole cells of 4 px = 16 px
    assert c.image.shape == (16, 16, 3) and c.labels.shape == (4, 4)
    assert c.image[0, 0, 0] == 10 and c.image[0, 6, 0] == 20 and c.image[8, 0, 0] == 30 and c.image[8, 6, 0] == 40
    # scene seams at canvas px 12 -> cut px 8 (rows) and 6 (cols): col 6 splits cell column 1 in halves
    np.testing.assert_array_equal(c.labels[:, 0], [3, 3, 0, 0])
    assert (c.labels[:, 1] == IGNORE).all()
    np.testing.assert_array_equal(c.labels[:, 2], [1, 1, 2, 2])
    with pytest.raises(ValueError, match="expected 12 x 12"):
        make_canvas([images[0][:10]] + images[1:], [0, 1, 2, 3], 2, s, (0, 0), stride, 0.75)
    with pytest.raises(ValueError, match="need 4 images"):
        make_canvas(images[:3], [0, 1, 2], 2, s, (0, 0), stride, 0.75)


def test_random_canvases_are_seeded_and_draw_only_the_given_images(tmp_path):
    from PIL import Image

    from training.dense_mosaics import random_canvases

    paths, labels = [], []
    for k in range(3):
        for j in range(2):
            p = tmp_path / f"c{k}_{j}.png"
            Image.fromarray(np.full((20, 20, 3), 40 * k + j, np.uint8)).save(p)
            paths.append(p)
            labels.append(k)
    labels = np.array(labels)
    a = list(random_canvases(paths, labels, 3, 2, (16, 24), 8, 0.75, seed=5))
    b = list(random_canvases(paths, labels, 3, 2, (16, 24), 8, 0.75, seed=5))
    assert len(a) == 3
    for (ca, pa), (cb, pb) in zip(a, b):
        assert pa == pb and np.array_equal(ca.image, cb.image) and np.array_equal(ca.labels, cb.labels)
        assert 16 <= ca.scene_px <= 24 and all(0 <= o < ca.scene_px for o in ca.offset)
        # every labelled cell's pixels are the colour of an image of that class
        for (r, c), k in np.ndenumerate(ca.labels):
            if k != IGNORE:
                centre = int(ca.image[r * 8 + 4, c * 8 + 4, 0])
                assert centre // 40 == k
    assert not all(np.array_equal(x.image, y.image)
                   for (x, _), (y, _) in zip(a, random_canvases(paths, labels, 3, 2, (16, 24), 8, 0.75, seed=6)))


def test_an_extra_cell_set_without_background_trains_alongside_the_boxes():
    x, y, w0, text = _problem(seed=3)
    xs, ys, _, text_s = _problem(seed=4, k=3, bg=0)  # scene cells: 3 classes + a 4th direction never labelled
    scene_y = np.where(ys == 3, IGNORE, ys).astype(np.int8)
    cells = CellSet(xs, scene_y, text_s[:3], 3, weight=1.0)
    w, hist = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None, extra=[cells])
    assert hist[-1]["ce_1"] < 0.5 * hist[0]["ce_1"] and hist[-1]["ce"] < 0.5 * hist[0]["ce"]
    lab = scene_y != IGNORE
    before = scene_accuracy(xs[lab] @ w0.T, scene_y[lab], text_s[:3])
    after = scene_accuracy(xs[lab] @ w.T, scene_y[lab], text_s[:3])
    assert after > max(0.9, before + 0.2)
    # without the extra set the first set's batches are drawn as before: same weights as a boxes-only run
    alone, _ = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None)
    again, _ = train_projection(x, y, w0, text, 2, 20.0, CFG, seed=0, log=lambda *_: None, extra=[])
    np.testing.assert_array_equal(alone, again)
    assert not np.array_equal(alone, w)


# ---- the trainable tail (training/dense_tail.py) -------------------------------------------------------------------
def test_dense_tail_splits_the_trunk_faithfully_and_its_training_lands_in_the_trunk(tmp_path):
    from training.dense_align import train_tail
    from training.dense_tail import DenseTail, load_tail_into_trunk, tail_embeddings, trunk_until

    model = _tiny_conv_model(tmp_path)
    trunk, proj = model.visual.trunk, model.visual.head.proj.weight
    start = len(trunk.blocks) - 2
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((12, 3, 64, 64)).astype(np.float32)
    feats = trunk_until(trunk, start, windows).numpy()
    tail = DenseTail(trunk, start, proj)
    with torch.no_grad():
        whole = trunk.forward_features(torch.from_numpy(windows))
        want = whole.permute(0, 2, 3, 1).reshape(-1, whole.shape[1]) @ proj.T
    got = tail_embeddings(tail, feats)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)  # untrained tail = the frozen head
    # train: cells of window i labelled i % 2 against two random "text" rows
    k = whole.shape[-1]
    labels = np.repeat((np.arange(12) % 2).astype(np.int8), k * k).reshape(12, k, k)
    text = rng.standard_normal((2, 16)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cfg = {"steps": 40, "tail_batch": 6, "tail_lr": 3e-3, "weight_decay": 0.0, "distill_weight": 0.1,
           "balance": 0.0, "log_every": 10}
    hist = train_tail(tail, [(feats.astype(np.float16), labels, text, 2, 1.0)], 10.0, cfg, seed=0,
                      log=lambda *_: None)
    assert hist[-1]["ce"] < 0.5 * hist[0]["ce"]
    trained = tail_embeddings(tail, feats)
    assert not np.allclose(trained, got, atol=1e-3)
    # the trained tail's trunk weights, loaded into a trunk, give the same cells from raw windows (what export runs)
    load_tail_into_trunk(trunk, tail.trunk_state())
    with torch.no_grad():
        whole = trunk.forward_features(torch.from_numpy(windows))
        again = (whole.permute(0, 2, 3, 1).reshape(-1, whole.shape[1]) @ tail.proj.T).numpy()
    np.testing.assert_allclose(again, trained, rtol=1e-3, atol=1e-4)
    assert any(name.startswith(f"blocks.{start}.") for name in tail.trunk_state())
    with pytest.raises(ValueError, match="do not fit"):
        load_tail_into_trunk(trunk, {"blocks.99.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="outside"):
        DenseTail(trunk, len(trunk.blocks), proj)
    with pytest.raises(ValueError, match="no conv_stem, bn1, blocks, conv_head, bn2"):
        DenseTail(torch.nn.Linear(2, 2), 0, proj)


def test_write_threshold_updates_model_json_atomically_and_refuses_a_bundle_without_dense_head(tmp_path):
    import rsclip_geo
    from tests.utils.tiny_bundle import build_tiny_bundle
    from tests.utils.tiny_dense import build_tiny_dense_bundle
    from training.config import ConfigError
    from training.dense_align import write_threshold

    bundle = build_tiny_dense_bundle(tmp_path / "bundle")
    pick = {"threshold": 0.2125, "rule": "lowest with cell precision >= 0.5 for every class",
            "recall_precision": {"ships": [0.86, 0.51]}}
    write_threshold(bundle, pick, "training.dense_align threshold --run R --min-precision 0.5")
    dense = rsclip_geo.load_model(bundle, device="cpu").bundle.dense
    assert dense.threshold == pytest.approx(0.2125)
    saved = json.loads((bundle / "model.json").read_text())["dense"]
    assert "--min-precision 0.5" in saved["threshold_pick"] and "0.51" in saved["threshold_pick"]
    assert not list(bundle.glob("*.tmp"))
    plain = build_tiny_bundle(tmp_path / "plain")
    before = (plain / "model.json").read_bytes()
    with pytest.raises(ConfigError, match="no dense head"):
        write_threshold(plain, pick, "x")
    assert (plain / "model.json").read_bytes() == before


@pytest.mark.parametrize("name", ["dense_align", "dense_align_tail"])
def test_shipped_dense_align_configs_parse_and_name_committed_files(name):
    """The dense-head recipes the model card cites load; the split and exclude files of their mosaics exist."""
    from training.dense_align import load_align_config

    repo = Path(__file__).resolve().parents[2]
    cfg = load_align_config(repo / "training" / "configs" / f"{name}.toml")
    assert cfg["data"]["window"] % 32 == 0 and cfg["labels"]["background_prompts"]
    if cfg["mosaics"]["count"]:
        for key in ("split", "exclude"):
            assert (repo / cfg["mosaics"][key]).is_file(), f"{name}.toml mosaics.{key} missing"
    assert (cfg["train"]["tail_from_block"] >= 0) == (name == "dense_align_tail")
    # fetched data is found through $RSCLIP_DATA, as the training configs' (not a path under one checkout)
    assert cfg["data"]["nwpu"].startswith("$RSCLIP_DATA/"), f"{name}.toml: NWPU VHR-10 outside $RSCLIP_DATA"


def test_nwpu_path_expands_rsclip_data_and_a_missing_one_is_named(tmp_path, monkeypatch):
    """The dense head's NWPU VHR-10 folder is read under $RSCLIP_DATA; a missing one names the key and the path."""
    from rsclip_geo.errors import DatasetError
    from training.dense_align import _nwpu_items

    root = tmp_path / "data" / "nwpu" / "image_set"
    root.mkdir(parents=True)
    (root / "train.txt").write_text("", encoding="utf-8")
    monkeypatch.setenv("RSCLIP_DATA", str(tmp_path / "data"))
    assert _nwpu_items({"nwpu": "$RSCLIP_DATA/nwpu", "part": "train", "max_images": 0}) == []
    monkeypatch.setenv("RSCLIP_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match=r"\[data\]: nwpu = '\$RSCLIP_DATA/nwpu' -> .*elsewhere/nwpu does not exist"):
        _nwpu_items({"nwpu": "$RSCLIP_DATA/nwpu", "part": "train", "max_images": 0})


def test_mosaic_config_rejects_a_bad_scene_size(tmp_path):
    from training.config import ConfigError
    from training.dense_align import load_align_config

    bad = tmp_path / "bad.toml"
    bad.write_text("[mosaics]\ncount = 10\nscene_px = [192, 96]\n")
    with pytest.raises(ConfigError, match="scene_px"):
        load_align_config(bad)


def test_config_values_of_the_wrong_kind_are_named_and_the_cli_prints_no_traceback(tmp_path):
    import subprocess
    import sys

    from training.config import ConfigError
    from training.dense_align import load_align_config

    for text, match in (('[train]\nsteps = "many"\n', "'train.steps' must be a number, got 'many'"),
                        ("[data]\nnwpu = 3\n", "'data.nwpu' must be a string"),
                        ("[labels]\nbackground_prompts = 'bare land'\n", "'labels.background_prompts' must be a list"),
                        ("[train]\nsteps = true\n", "'train.steps' must be a number")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_align_config(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text("[train]\nsteps = 10\nlr = 1\n[data]\nscale = 2\n")  # an int where a float is the default
    assert load_align_config(ok)["data"]["scale"] == 2
    repo = Path(__file__).resolve().parents[2]
    for args in (["training.dense_align", "--checkpoint", "x.pt"], ["training.train"]):
        r = subprocess.run([sys.executable, "-m", *args, "--config", str(bad), "--out", str(tmp_path / "out")],
                           capture_output=True, text=True, cwd=repo)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().startswith(f"error: {bad}: "), r.stderr
    assert not (tmp_path / "out").exists()


def test_cached_arrays_reuse_only_the_same_key_and_leave_no_temporary_file(tmp_path):
    from training.keyed_cache import cached_arrays

    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(len(calls) * 3)}

    first = cached_arrays(tmp_path, "cache", {"seed": 0}, build, log=lambda *_: None)
    again = cached_arrays(tmp_path, "cache", {"seed": 0}, build, log=lambda *_: None)
    assert len(calls) == 1 and np.array_equal(first["x"], again["x"])
    other = cached_arrays(tmp_path, "cache", {"seed": 1}, build, log=lambda *_: None)
    assert len(calls) == 2 and len(other["x"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "cache.npz"]
    assert json.loads((tmp_path / "cache.json").read_text())["key"] == {"seed": 1}


def test_head_file_bytes_do_not_depend_on_the_wall_clock(tmp_path):
    """A bundle records the head file's SHA-256, so two runs of the same stage must write the same bytes."""
    from training.dense_align import _save_head, sha256

    cfg = {"checkpoint_sha256": "0" * 64, "train": {"steps": 3}}
    head = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    files = []
    for i, seconds in enumerate((12.5, 977.25)):
        out = tmp_path / f"run{i}"
        out.mkdir()
        _save_head(out, head, cfg, {"config": cfg, "train_seconds": seconds, "history": [{"step": 1, "loss": 0.5}]})
        files.append(out / "dense_projection.pt")
        assert json.loads((out / "dense_align_report.json").read_text())["train_seconds"] == seconds
    assert sha256(files[0]) == sha256(files[1])
    state = torch.load(files[0], weights_only=False)
    assert json.loads(state["report"]) == {"history": [{"step": 1, "loss": 0.5}]}
    assert torch.equal(state["weight"], head["weight"]) and json.loads(state["config"]) == cfg
