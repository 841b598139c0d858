"""Dense alignment (issue 12 item 2, the FarSLIP row): train the dense head's per-cell projection, trunk frozen.

The shipped dense head applies the global projection (trunk features 1280 -> text space 384) to every cell of the
trunk's last feature map. Here a *dense* projection, initialised from the global one, learns from detection boxes:

(a) region-category loss: each cell of NWPU VHR-10 *train* images is labelled from the boxes
    (``training.dense_labels``: class where boxes of a class cover most of it, background where no box touches
    it, ignored on object edges) and scored against the class prompts and a few background prompts (frozen text
    tower, the bundle's templates averaged, the model's logit scale); cross-entropy over [classes + background],
    the background logit being the log-sum-exp of the background prompts' logits;
(b) patch-to-patch self-distillation: 1 - cosine between a cell's new embedding and the global projection's
    embedding of the same cell (weight ``train.distill_weight``), so cells keep the global semantics.

The trunk runs once: features of every ``data.window``-pixel window (half-window steps, as ``segment`` plans them)
of every train image at ``data.scale`` scene px per model px (as ``bench/dense_eval.py --scale``) are cached
under the run folder, and training touches only the cached cells. ``data.val_share`` of the train images are held
out to report cell-level figures before/after (the NWPU test images are never read).

    python -m training.dense_align --config training/configs/dense_align.toml \\
        --checkpoint runs/v2c/checkpoint_final.pt --out runs/dense_align
    python -m training.dense_align export --projection runs/dense_align/dense_projection.pt \\
        --checkpoint runs/v2c/checkpoint_final.pt --bundle rsclip_geo/models/default -o BUNDLE_OUT
    python -m training.dense_align threshold --run runs/dense_align --projection runs/dense_align/dense_projection.pt \\
        --bundle BUNDLE_OUT     # a segment --threshold picked on held-out train cells
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rsclip_geo.export import file_sha256 as sha256, partial_bundle_dir
from training.config import ConfigError, merge_config, read_toml
from training.dense_labels import IGNORE, cell_labels, window_origins

DEFAULTS: dict = {
    "seed": 0,
    "templates_from": "rsclip_geo/models/default",  # bundle whose model.json templates make the class prompts
    "data": {"nwpu": ".cache/data/nwpu_vhr10/data/NWPU_VHR", "part": "train", "scale": 1.17, "window": 128,
             "overlap": 0.5, "max_images": 0, "val_share": 0.1, "keep_background": 0.3, "keep_ignored": 0.3,
             "batch": 32},
    "labels": {"min_cover": 0.5, "background_max_cover": 0.0, "background_prompts": ["bare land"]},
    "train": {"steps": 300, "batch": 2048, "lr": 3e-4, "weight_decay": 0.0, "distill_weight": 1.0,
              "balance": 0.5, "threads": 2, "log_every": 50},
}


def load_align_config(path: Path) -> dict:
    path = Path(path)
    cfg = merge_config(DEFAULTS, read_toml(path), path)
    if not cfg["labels"]["background_prompts"]:
        raise ConfigError(f"{path}: labels.background_prompts is empty")
    return cfg




# ---- the loss ------------------------------------------------------------------------------------------------------
def dense_align_loss(weight: torch.Tensor, weight0: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     text: torch.Tensor, n_classes: int, logit_scale: float, distill_weight: float,
                     class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(loss, parts) for cell features ``x`` [N, C] with labels ``y`` [N] (class, ``n_classes`` = background,
    IGNORE). ``text`` [n_classes + n_background, D], unit rows; ``weight``/``weight0`` [D, C] trained/global."""
    emb = x @ weight.T
    logits = logit_scale * F.normalize(emb, dim=-1) @ text.T
    logits = torch.cat([logits[:, :n_classes], torch.logsumexp(logits[:, n_classes:], dim=1, keepdim=True)], 1)
    labelled = y != IGNORE
    ce = (F.cross_entropy(logits[labelled], y[labelled].long(), weight=class_weight) if labelled.any()
          else logits.sum() * 0)
    with torch.no_grad():
        target = x @ weight0.T
    distill = (1 - F.cosine_similarity(emb, target, dim=-1)).mean()
    return ce + distill_weight * distill, {"ce": ce.item(), "distill": distill.item()}


def class_weights(y: np.ndarray, n: int, power: float) -> torch.Tensor:
    """Inverse-frequency weights ** power over the ``n`` labels (0 for absent ones), mean 1 over present ones."""
    counts = np.bincount(y[y != IGNORE].astype(np.int64), minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    w /= w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


def train_projection(x: np.ndarray, y: np.ndarray, weight0: np.ndarray, text: np.ndarray, n_classes: int,
                     logit_scale: float, tcfg: dict, seed: int, log=print) -> tuple[np.ndarray, list[dict]]:
    """Adam on the dense projection (init ``weight0``), batches of cells drawn with a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.from_numpy(np.ascontiguousarray(weight0, np.float32))
    w = torch.nn.Parameter(w0.clone())
    t = torch.from_numpy(np.ascontiguousarray(text, np.float32))
    cw = class_weights(y, n_classes + 1, float(tcfg["balance"]))
    opt = torch.optim.AdamW([w], lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"]))
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    history = []
    for step in range(1, int(tcfg["steps"]) + 1):
        idx = torch.randint(0, len(xs), (min(int(tcfg["batch"]), len(xs)),), generator=g)
        loss, parts = dense_align_loss(w, w0, xs[idx].float(), ys[idx], t, n_classes, logit_scale,
                                       float(tcfg["distill_weight"]), cw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % int(tcfg["log_every"]) == 0 or step == int(tcfg["steps"]):
            history.append({"step": step, "loss": loss.item(), **parts})
            log(f"step {step}: loss {loss.item():.4f} (ce {parts['ce']:.4f}, distill {parts['distill']:.4f})")
    return w.detach().numpy().copy(), history


# ---- figures on held-out cells -------------------------------------------------------------------------------------
def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their mean rank
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cell_figures(x: np.ndarray, y: np.ndarray, image: np.ndarray, weight: np.ndarray, text: np.ndarray,
                 classes: list[str]) -> dict:
    """Per class: ROC AUC of cosine(cell, class prompt), cells of the class vs background cells of the images
    holding it (what a per-image threshold sees), and the accuracy over [classes + background]."""
    n = len(classes)
    emb = x.astype(np.float32) @ weight.T
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sims = emb @ text.T
    pred = np.concatenate([sims[:, :n], sims[:, n:].max(axis=1, keepdims=True)], 1).argmax(1)
    lab = y != IGNORE
    out = {"accuracy": float((pred[lab] == y[lab]).mean()) if lab.any() else float("nan"), "auc": {}}
    for k, name in enumerate(classes):
        with_k = np.isin(image, np.unique(image[y == k]))
        out["auc"][name] = auc(sims[y == k, k], sims[(y == n) & with_k, k])
    return out


# ---- the feature cache ---------------------------------------------------------------------------------------------
def _class_prompts(model, tokenizer, names: list[str], templates: list[str]) -> np.ndarray:
    rows = []
    with torch.no_grad():
        for name in names:
            e = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])).float(), dim=-1)
            rows.append(F.normalize(e.mean(0), dim=0).numpy())
    return np.stack(rows)


def _windows(img, boxes, cfg, stride: int, n_classes: int):
    """(normalised [n, 3, win, win] windows, their cell labels [n, k, k]) of one image resized by 1 / scale."""
    from PIL import Image

    d = cfg["data"]
    w, h = img.size
    sw, sh = max(stride, round(w / d["scale"])), max(stride, round(h / d["scale"]))
    cols, rows = sw // stride, sh // stride
    arr = np.asarray(img.resize((sw, sh), Image.BICUBIC), np.float32)[:rows * stride, :cols * stride]
    arr = (arr / 255.0 - 0.5) / 0.5
    fx, fy = sw / w, sh / h
    scaled = [(k, (x0 * fx, y0 * fy, x1 * fx, y1 * fy)) for k, (x0, y0, x1, y1) in boxes]
    labels = cell_labels(scaled, rows, cols, stride, n_classes, d["min_cover"], d["background_max_cover"])
    k = d["window"] // stride
    step = max(1, round(k * (1 - d["overlap"])))
    xs, ys = [], []
    for r in window_origins(rows, k, step):
        for c in window_origins(cols, k, step):
            win = arr[r * stride:(r + k) * stride, c * stride:(c + k) * stride]
            if win.shape[0] < k * stride or win.shape[1] < k * stride:  # image smaller than a window
                continue
            xs.append(win.transpose(2, 0, 1))
            ys.append(labels[r:r + k, c:c + k])
    return xs, ys


def cache_features(model, cfg: dict, classes: list[str], out: Path, log=print) -> dict:
    """features [N, C] float16, labels [N] int8, image [N] int32 of the kept cells of every window; reused when
    the cache's key (checkpoint, data and label settings) matches."""
    from PIL import Image

    from training.data.detection_sets import nwpu_vhr10_images

    d = {**cfg["data"], **{k: cfg["labels"][k] for k in ("min_cover", "background_max_cover")}}
    key = {"checkpoint_sha256": cfg["checkpoint_sha256"], "data": d, "classes": classes, "seed": cfg["seed"]}
    meta_path, arrays = out / "cache.json", out / "cache.npz"
    if meta_path.is_file() and arrays.is_file() and json.loads(meta_path.read_text()).get("key") == key:
        log(f"feature cache {arrays} reused")
        with np.load(arrays) as z:
            return {name: z[name] for name in z.files}
    items = nwpu_vhr10_images(Path(d["nwpu"]), d["part"])
    if d["max_images"]:
        items = items[:int(d["max_images"])]
    trunk = model.visual.trunk
    stride = int(trunk.feature_info[-1]["reduction"])
    rng = np.random.default_rng(cfg["seed"])
    feats, labs, imgs = [], [], []
    t0 = time.perf_counter()
    for i, (image_id, path, boxes) in enumerate(items):
        with Image.open(path) as im:
            img = im.convert("RGB")
        nb = [(classes.index(b.name), (b.xmin, b.ymin, b.xmax, b.ymax)) for b in boxes]
        xs, ys = _windows(img, nb, {"data": d}, stride, len(classes))
        for j in range(0, len(xs), int(d["batch"])):
            with torch.no_grad():
                f = trunk.forward_features(torch.from_numpy(np.stack(xs[j:j + int(d["batch"])])))
            f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy()
            y = np.concatenate([a.reshape(-1) for a in ys[j:j + int(d["batch"])]])
            u = rng.random(len(y))
            keep = ((y != IGNORE) & (y != len(classes))) | ((y == len(classes)) & (u < d["keep_background"])) \
                | ((y == IGNORE) & (u < d["keep_ignored"]))
            feats.append(f[keep].astype(np.float16))
            labs.append(y[keep])
            imgs.append(np.full(int(keep.sum()), i, np.int32))
        if (i + 1) % 50 == 0 or i + 1 == len(items):
            log(f"cached {i + 1}/{len(items)} images, {sum(map(len, labs))} cells, {time.perf_counter() - t0:.0f} s")
    cache = {"features": np.concatenate(feats), "labels": np.concatenate(labs), "image": np.concatenate(imgs),
             "image_ids": np.array([i for i, _, _ in items])}
    tmp = out / "cache.tmp.npz"
    np.savez(tmp, **cache)
    tmp.replace(arrays)
    meta_path.write_text(json.dumps({"key": key, "seconds": time.perf_counter() - t0}, indent=2) + "\n")
    return cache


def split_images(n_images: int, share: float, seed: int) -> np.ndarray:
    """Boolean [n_images]: True for the held-out (validation) train images, a seeded random ``share``."""
    rng = np.random.default_rng(seed + 1)
    val = np.zeros(n_images, bool)
    val[rng.permutation(n_images)[:int(round(share * n_images))]] = True
    return val


# ---- main ----------------------------------------------------------------------------------------------------------
def run(config: Path, checkpoint: Path, out: Path, log=print) -> dict:
    from rsclip_geo.runtime.bundle import read_bundle
    from training.checkpoint import load_run_model
    from training.data.boxes import NWPU_VHR10_CLASSES
    from training.data.names import readable_name

    cfg = load_align_config(config)
    torch.manual_seed(cfg["seed"])
    torch.set_num_threads(int(cfg["train"]["threads"]))
    out.mkdir(parents=True, exist_ok=True)
    cfg["checkpoint_sha256"] = sha256(checkpoint)
    model, tokenizer, _ = load_run_model(checkpoint.parent, checkpoint)
    proj = model.visual.head.proj
    weight0 = proj.weight.detach().numpy().copy()
    bundle = read_bundle(cfg["templates_from"])
    classes = list(NWPU_VHR10_CLASSES)
    prompts = [readable_name(c)[1] for c in classes]
    text = _class_prompts(model, tokenizer, prompts + list(cfg["labels"]["background_prompts"]),
                          list(bundle.templates))
    logit_scale = float(model.logit_scale.detach().exp())
    cache = cache_features(model, cfg, classes, out, log)
    val = split_images(len(cache["image_ids"]), float(cfg["data"]["val_share"]), cfg["seed"])[cache["image"]]
    x, y = cache["features"], cache["labels"]
    counts = {name: int((y[~val] == k).sum()) for k, name in enumerate(classes + ["background"])}
    log(f"train cells: {counts}, ignored {int((y[~val] == IGNORE).sum())}; val cells {int(val.sum())}")
    t0 = time.perf_counter()
    weight, history = train_projection(x[~val], y[~val], weight0, text, len(classes), logit_scale,
                                       cfg["train"], cfg["seed"], log)
    seconds = time.perf_counter() - t0
    before = cell_figures(x[val], y[val], cache["image"][val], weight0, text, classes)
    after = cell_figures(x[val], y[val], cache["image"][val], weight, text, classes)
    cos = F.cosine_similarity(torch.from_numpy(x[val].astype(np.float32) @ weight.T),
                              torch.from_numpy(x[val].astype(np.float32) @ weight0.T), dim=-1)
    report = {"config": cfg, "prompts": prompts, "logit_scale": logit_scale, "train_cells": counts,
              "train_seconds": seconds, "history": history, "val_before": before, "val_after": after,
              "val_cosine_to_global_mean": float(cos.mean())}
    log(f"held-out train images: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}; cosine to the "
        f"global cells {float(cos.mean()):.3f}")
    for name in classes:
        log(f"  {name:<20} cell AUC {before['auc'][name]:.3f} -> {after['auc'][name]:.3f}")
    state = {"weight": torch.from_numpy(weight), "checkpoint_sha256": cfg["checkpoint_sha256"],
             "config": json.dumps(cfg), "report": json.dumps({k: v for k, v in report.items() if k != "config"})}
    tmp = out / "dense_projection.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "dense_projection.pt")
    (out / "dense_align_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _hits(pos: np.ndarray, neg: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) at each grid value: positive / negative scores >= the value."""
    return (pos[None] >= grid[:, None]).sum(1), (neg[None] >= grid[:, None]).sum(1)


def best_threshold(scores: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> tuple[float, list[float]]:
    """The grid value maximising the mean F1 over (positive scores, negative scores) pairs; (value, F1 per pair)."""
    f1s = []
    for pos, neg in scores:
        tp, fp = _hits(pos, neg, grid)
        f1s.append(2 * tp / np.maximum(2 * tp + fp + (len(pos) - tp), 1))
    i = int(np.mean(f1s, 0).argmax())
    return float(grid[i]), [float(f[i]) for f in f1s]


def lowest_threshold_with_precision(scores: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray,
                                    min_precision: float) -> tuple[float, list[tuple[float, float]]]:
    """The lowest grid value at which every (positive, negative scores) pair keeps precision >= ``min_precision``:
    recall first, at a floor of precision (the objects goal: recall >= 0.6 at precision >= 0.5). Returns (value,
    (recall, precision) per pair); a ValueError when no grid value holds the floor for every pair."""
    stats = []
    for pos, neg in scores:
        tp, fp = _hits(pos, neg, grid)
        stats.append((tp / max(len(pos), 1), np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)))
    ok = np.all([prec >= min_precision for _, prec in stats], axis=0) & np.any([rec > 0 for rec, _ in stats], axis=0)
    if not ok.any():
        raise ValueError(f"no threshold in [{grid[0]}, {grid[-1]}] keeps precision >= {min_precision} for every class")
    i = int(np.flatnonzero(ok)[0])
    return float(grid[i]), [(float(rec[i]), float(prec[i])) for rec, prec in stats]


def pick_threshold(run: Path, projection: Path | None, bundle_dir: Path, checkpoint: Path | None = None,
                   queries: dict[str, str] | None = None, min_precision: float | None = None) -> dict:
    """One ``segment --threshold`` for a dense head, picked on the held-out NWPU *train* cells of ``run``'s cache
    (never test images): the cosine to the query's prompt ensemble (the bundle's text encoder) that maximises the
    mean F1 of class cells vs background cells of the images holding the class, or with ``min_precision`` the
    lowest one at which every class keeps that cell precision (``lowest_threshold_with_precision``). ``projection``
    None: the global projection of ``checkpoint``."""
    import rsclip_geo
    from training.data.boxes import NWPU_VHR10_CLASSES

    queries = queries or {"airplane": "airplanes", "storage tank": "storage tanks", "ship": "ships"}
    cfg = json.loads((run / "cache.json").read_text())["key"]
    with np.load(run / "cache.npz") as z:
        image, y = z["image"], z["labels"]
        val = split_images(len(z["image_ids"]), float(cfg["data"]["val_share"]), int(cfg["seed"]))[image]
        x = z["features"][val].astype(np.float32)
    y, image = y[val], image[val]
    if projection is None:
        from training.checkpoint import load_checkpoint

        if checkpoint is None:
            raise ConfigError("threshold: give --projection (trained head) or --checkpoint (its global projection)")
        sd = load_checkpoint(checkpoint)["state_dict"]
        weight = next(v for k, v in sd.items() if k.endswith("visual.head.proj.weight")).numpy()
    else:
        weight = load_projection(projection)["weight"].numpy()
    emb = x @ weight.T
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    text = rsclip_geo.load_model(bundle_dir, device="cpu").class_embeddings(list(queries.values()))
    bg = len(NWPU_VHR10_CLASSES)
    pairs = []
    for j, cls in enumerate(queries):
        k = NWPU_VHR10_CLASSES.index(cls)
        with_k = np.isin(image, np.unique(image[y == k]))
        s = emb @ text[j]
        pairs.append((s[y == k], s[(y == bg) & with_k]))
    grid = np.round(np.arange(0.0, 0.4001, 0.0025), 4)
    if min_precision is not None:
        value, rp = lowest_threshold_with_precision(pairs, grid, float(min_precision))
        return {"threshold": value, "rule": f"lowest with cell precision >= {min_precision} for every class",
                "recall_precision": {q: [round(r, 4), round(p, 4)] for q, (r, p) in zip(queries, rp)}}
    value, f1 = best_threshold(pairs, grid)
    return {"threshold": value, "rule": "best mean cell F1", "f1": dict(zip(queries, f1))}


def load_projection(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "weight" not in state or "checkpoint_sha256" not in state:
        raise ConfigError(f"{path}: not a dense projection file from training.dense_align (no weight/checksum)")
    return state


def export_bundle(projection: Path, checkpoint: Path, bundle_dir: Path, out: Path, overwrite: bool = False) -> Path:
    """A copy of ``bundle_dir`` whose dense head uses the trained projection (dense_encoder.onnx and model.json's
    ``dense`` rewritten; everything else copied as is). The checkpoint must be the one the projection was trained
    on and the one the bundle was exported from (SHA-256)."""
    from rsclip_geo.export import parity as par
    from rsclip_geo.export.dense import export_dense
    from rsclip_geo.runtime.bundle import read_bundle
    from rsclip_geo.runtime.preprocess import Preprocessor
    from training.checkpoint import load_run_model

    state = load_projection(projection)
    bundle = read_bundle(bundle_dir)
    digest = sha256(checkpoint)
    for what, want in (("projection file", state["checkpoint_sha256"]),
                       ("bundle (model.json source.sha256)", bundle.source.get("sha256"))):
        if want != digest:
            raise ConfigError(f"{checkpoint}: SHA-256 {digest[:12]} differs from the {what}'s {str(want)[:12]}")
    if bundle.dense is None:
        raise ConfigError(f"{bundle_dir}: the bundle has no dense head to replace")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model, _, _ = load_run_model(checkpoint.parent, checkpoint)
    tmp = partial_bundle_dir(out)
    try:
        for f in Path(bundle_dir).iterdir():
            if f.is_file() and f.name != bundle.dense.file:
                shutil.copy2(f, tmp / f.name)
        raw, _ = par.parity_images(None)
        images = Preprocessor(bundle.image)(raw)
        weights = "fp32" if getattr(bundle.dense, "weights", "fp32") == "fp32" else "fp16"  # as the bundle's
        spec = export_dense(model, tmp, images, tmp / bundle.image_encoder, bundle.dense.window // bundle.dense.stride,
                            projection=state["weight"].numpy(), weights=weights)
        spec = replace(spec, parity={**spec.parity, "projection_file_sha256": sha256(projection)})
        replace(bundle, dense=spec).write(tmp)
        read_bundle(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        ap = argparse.ArgumentParser(prog="python -m training.dense_align export")
        ap.add_argument("--projection", type=Path, required=True)
        ap.add_argument("--checkpoint", type=Path, required=True)
        ap.add_argument("--bundle", type=Path, required=True, help="Bundle exported from --checkpoint (copied).")
        ap.add_argument("-o", "--out", type=Path, required=True)
        ap.add_argument("--overwrite", action="store_true")
        a = ap.parse_args(argv[1:])
        print(export_bundle(a.projection, a.checkpoint, a.bundle, a.out, a.overwrite))
        return 0
    if argv[:1] == ["threshold"]:
        ap = argparse.ArgumentParser(prog="python -m training.dense_align threshold")
        ap.add_argument("--run", type=Path, required=True, help="Run folder holding the feature cache.")
        ap.add_argument("--projection", type=Path, default=None, help="Trained projection (default: the global).")
        ap.add_argument("--checkpoint", type=Path, default=None, help="Checkpoint for the global projection.")
        ap.add_argument("--bundle", type=Path, required=True, help="Bundle whose text encoder embeds the queries.")
        ap.add_argument("--min-precision", type=float, default=None,
                        help="Pick the lowest threshold keeping this cell precision for every class (recall first) "
                             "instead of the best mean F1.")
        a = ap.parse_args(argv[1:])
        print(json.dumps(pick_threshold(a.run, a.projection, a.bundle, a.checkpoint, min_precision=a.min_precision)))
        return 0
    ap = argparse.ArgumentParser(prog="python -m training.dense_align", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    run(a.config, a.checkpoint, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
