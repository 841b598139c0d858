"""Dense alignment (issue 12 item 2, the FarSLIP row): train the dense head's per-cell projection, trunk frozen.

The shipped dense head applies the global projection (trunk features 1280 -> text space 384) to every cell of the
trunk's last feature map. Here a *dense* projection, initialised from the global one, learns from detection boxes:

(a) region-category loss: each cell of NWPU VHR-10 *train* images is labelled from the boxes
    (``training.dense_labels``: class where boxes of a class cover most of it, background where no box touches
    it, ignored on object edges) and scored against the class prompts and a few background prompts (frozen text
    tower, the bundle's templates averaged, the model's logit scale); cross-entropy over [classes + background],
    the background logit being the log-sum-exp of the background prompts' logits;
(b) patch-to-patch self-distillation: 1 - cosine between a cell's new embedding and the global projection's
    embedding of the same cell (weight ``train.distill_weight``), so cells keep the global semantics;
(c) optionally (``[mosaics] count > 0``) scene-category loss on cells of random mosaics of AID *training* images
    (``training.dense_mosaics``): cross-entropy over the scene-class prompts for cells one scene covers, so cells
    near a seam say which scene they lie in (weight ``mosaics.weight``; distillation applies to them too).

The trunk runs once: features of every ``data.window``-pixel window (``data.overlap`` steps, as ``segment`` plans them)
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
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rsclip_geo.export import file_sha256 as sha256, written_folder
from rsclip_geo.runtime.encoder import l2_normalize
from training.config import ConfigError, exit_on_config_error, merge_config, read_toml
from training.dense_labels import IGNORE, cell_labels, window_origins
from training.keyed_cache import cached_arrays

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict = {
    "seed": 0,
    "templates_from": "rsclip_geo/models/default",  # bundle whose model.json templates make the class prompts
    "data": {"nwpu": "$RSCLIP_DATA/nwpu_vhr10/data/NWPU_VHR", "part": "train", "scale": 1.17, "window": 0,
             "overlap": 0.5, "max_images": 0, "val_share": 0.1, "keep_background": 0.3, "keep_ignored": 0.3,
             "batch": 32},
    "labels": {"min_cover": 0.5, "background_max_cover": 0.0, "background_prompts": ["bare land"]},
    "train": {"steps": 300, "batch": 2048, "lr": 3e-4, "weight_decay": 0.0, "distill_weight": 1.0,
              "balance": 0.5, "threads": 2, "log_every": 50,
              # >= 0: also train the trunk from this block on (the dense head's copy; training/dense_tail.py)
              "tail_from_block": -1, "tail_batch": 64, "tail_lr": 1e-4},
    # scene mosaics (training/dense_mosaics.py): count 0 = boxes only
    "mosaics": {"count": 0, "val_count": 0, "grid": 4, "scene_px": [96, 192], "min_cover": 0.75,
                "aid_root": "../shared/data/aid", "split": "training/splits/aid30_split.json",
                "exclude": "training/splits/aid30_train_exclude.txt", "val_share": 0.1, "weight": 1.0},
}


def load_align_config(path: Path) -> dict:
    path = Path(path)
    cfg = merge_config(DEFAULTS, read_toml(path), path)
    if not cfg["labels"]["background_prompts"]:
        raise ConfigError(f"{path}: labels.background_prompts is empty")
    px = cfg["mosaics"]["scene_px"]
    if cfg["mosaics"]["count"] and not (isinstance(px, list) and len(px) == 2 and 0 < px[0] <= px[1]):
        raise ConfigError(f"{path}: mosaics.scene_px must be [smallest, largest] model px, got {px}")
    return cfg


def trunk_stride(model) -> int:
    """Model pixels per cell of the trunk's last feature map (32 for EfficientNet)."""
    return int(model.visual.trunk.feature_info[-1]["reduction"])


def resolve_window(cfg: dict, model) -> int:
    """Set ``data.window`` to the model's input size when it is 0 (the default: the window the exported bundle's
    dense head runs at, so one config serves 128 and 160 px towers) and check it against the trunk's stride."""
    d = cfg["data"]
    if not int(d["window"]):
        d["window"] = int(model.visual.image_size[0])
    stride = trunk_stride(model)
    if int(d["window"]) <= 0 or int(d["window"]) % stride:
        raise ConfigError(f"data.window must be a positive multiple of the trunk's stride {stride}, got {d['window']}")
    return int(d["window"])


# ---- the loss ------------------------------------------------------------------------------------------------------
def dense_align_loss(weight: torch.Tensor, weight0: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     text: torch.Tensor, n_classes: int, logit_scale: float, distill_weight: float,
                     class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(loss, parts) for cell features ``x`` [N, C] with labels ``y`` [N] (class, ``n_classes`` = background,
    IGNORE). ``text`` [n_classes + n_background, D], unit rows (no background rows: no background label);
    ``weight``/``weight0`` [D, C] trained/global."""
    with torch.no_grad():
        target = x @ weight0.T
    return cell_loss(x @ weight.T, target, y, text, n_classes, logit_scale, distill_weight, class_weight)


def cell_loss(emb: torch.Tensor, target: torch.Tensor, y: torch.Tensor, text: torch.Tensor, n_classes: int,
              logit_scale: float, distill_weight: float, class_weight: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict]:
    """Region-category cross-entropy of cell embeddings ``emb`` [N, D] plus ``distill_weight`` x (1 - cosine to
    the frozen head's embeddings ``target``); see ``dense_align_loss`` for the labels and text rows."""
    logits = logit_scale * F.normalize(emb, dim=-1) @ text.T
    if text.shape[0] > n_classes:  # background prompts: one background logit
        logits = torch.cat([logits[:, :n_classes], torch.logsumexp(logits[:, n_classes:], dim=1, keepdim=True)], 1)
    labelled = y != IGNORE
    ce = (F.cross_entropy(logits[labelled], y[labelled].long(), weight=class_weight) if labelled.any()
          else logits.sum() * 0)
    distill = (1 - F.cosine_similarity(emb, target, dim=-1)).mean()
    return ce + distill_weight * distill, {"ce": ce.item(), "distill": distill.item()}


def class_weights(y: np.ndarray, n: int, power: float) -> torch.Tensor:
    """Inverse-frequency weights ** power over the ``n`` labels (0 for absent ones), mean 1 over present ones."""
    counts = np.bincount(y[y != IGNORE].astype(np.int64), minlength=n).astype(np.float64)
    w = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    w /= w[counts > 0].mean()
    return torch.tensor(w, dtype=torch.float32)


@dataclass(frozen=True)
class CellSet:
    """Cells of one kind of supervision: features [N, C], labels [N], the text rows their labels index (classes,
    then background prompts if any) and the loss weight of the set."""

    x: np.ndarray
    y: np.ndarray
    text: np.ndarray
    n_classes: int
    weight: float = 1.0


def _text_and_weights(y: np.ndarray, text: np.ndarray, n_classes: int, tcfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The text rows as a tensor and the class weights of labels ``y`` (background counted when text has
    background rows)."""
    n_labels = n_classes + (1 if len(text) > n_classes else 0)
    return (torch.from_numpy(np.ascontiguousarray(text, np.float32)),
            class_weights(y, n_labels, float(tcfg["balance"])))


def train_projection(x: np.ndarray, y: np.ndarray, weight0: np.ndarray, text: np.ndarray, n_classes: int,
                     logit_scale: float, tcfg: dict, seed: int, log=print,
                     extra: Sequence[CellSet] = ()) -> tuple[np.ndarray, list[dict]]:
    """Adam on the dense projection (init ``weight0``), batches of cells drawn with a seeded generator; each step
    adds one batch of every ``extra`` cell set (e.g. scene mosaics) to the loss, times its weight."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.from_numpy(np.ascontiguousarray(weight0, np.float32))
    w = torch.nn.Parameter(w0.clone())
    sets = [CellSet(x, y, text, n_classes)] + list(extra)
    prepared = [(torch.from_numpy(cs.x), torch.from_numpy(cs.y), *_text_and_weights(cs.y, cs.text, cs.n_classes, tcfg),
                 cs.n_classes, float(cs.weight)) for cs in sets]
    opt = torch.optim.AdamW([w], lr=float(tcfg["lr"]), weight_decay=float(tcfg["weight_decay"]))

    def batch_loss(j: int):
        xs, ys, t, cw, n, lw = prepared[j]
        idx = torch.randint(0, len(xs), (min(int(tcfg["batch"]), len(xs)),), generator=g)
        part, p = dense_align_loss(w, w0, xs[idx].float(), ys[idx], t, n, logit_scale, float(tcfg["distill_weight"]),
                                   cw)
        return lw * part, p

    history = _fit(opt, len(prepared), batch_loss, tcfg, log)
    return w.detach().numpy().copy(), history


def _fit(opt, n_sets: int, batch_loss, tcfg: dict, log) -> list[dict]:
    """The optimisation loop of both kinds of head: each step sums ``batch_loss(j)`` (weighted loss, its parts)
    over the cell sets in order (so the seeded batch draws are the same run to run), logs every ``log_every``."""
    history = []
    for step in range(1, int(tcfg["steps"]) + 1):
        loss, parts = 0.0, {}
        for j in range(n_sets):
            part, p = batch_loss(j)
            loss = loss + part
            parts.update(p if j == 0 else {f"{k}_{j}": v for k, v in p.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % int(tcfg["log_every"]) == 0 or step == int(tcfg["steps"]):
            history.append({"step": step, "loss": loss.item(), **parts})
            log(f"step {step}: loss {loss.item():.4f} (" + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()) + ")")
    return history


def train_tail(tail, sets: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, int, float]], logit_scale: float,
               tcfg: dict, seed: int, log=print) -> list[dict]:
    """Adam on a DenseTail (training/dense_tail.py): each step one batch of ``tcfg['tail_batch']`` windows of every
    set (window features [N, C, h, w], cell labels [N, k, k], text rows, number of classes, loss weight), cross-
    entropy + distillation to a frozen copy of the tail's starting weights. BatchNorm statistics stay frozen."""
    import copy

    g = torch.Generator().manual_seed(seed)
    frozen = copy.deepcopy(tail).eval()
    for q in frozen.parameters():
        q.requires_grad_(False)
    prepared = [(feats, torch.from_numpy(labels.reshape(len(labels), -1)),
                 *_text_and_weights(labels.reshape(-1), text, n, tcfg), n, float(weight))
                for feats, labels, text, n, weight in sets]
    opt = torch.optim.AdamW(tail.parameters(), lr=float(tcfg["tail_lr"]), weight_decay=float(tcfg["weight_decay"]))
    tail.eval()  # BatchNorm: running statistics kept, affine parameters learn

    def batch_loss(j: int):
        feats, ys, text, cw, n, lw = prepared[j]
        idx = torch.randint(0, len(feats), (min(int(tcfg["tail_batch"]), len(feats)),), generator=g)
        x = torch.from_numpy(feats[idx.numpy()].astype(np.float32))
        with torch.no_grad():
            target = frozen(x)
        part, p = cell_loss(tail(x), target, ys[idx].reshape(-1), text, n, logit_scale, float(tcfg["distill_weight"]),
                            cw)
        return lw * part, p

    return _fit(opt, len(prepared), batch_loss, tcfg, log)


# ---- figures on held-out cells -------------------------------------------------------------------------------------
def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if not len(pos) or not len(neg):
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # ties get their mean rank
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cell_figures(emb: np.ndarray, y: np.ndarray, image: np.ndarray, text: np.ndarray, classes: list[str]) -> dict:
    """Per class, for cell embeddings [N, D] (any head): ROC AUC of cosine(cell, class prompt), cells of the class
    vs background cells of the images holding it (what a per-image threshold sees), and the accuracy over
    [classes + background]."""
    n = len(classes)
    sims = l2_normalize(emb) @ text.T
    pred = np.concatenate([sims[:, :n], sims[:, n:].max(axis=1, keepdims=True)], 1).argmax(1)
    lab = y != IGNORE
    out = {"accuracy": float((pred[lab] == y[lab]).mean()) if lab.any() else float("nan"), "auc": {}}
    for k, name in enumerate(classes):
        with_k = np.isin(image, np.unique(image[y == k]))
        out["auc"][name] = auc(sims[y == k, k], sims[(y == n) & with_k, k])
    return out


def scene_accuracy(emb: np.ndarray, y: np.ndarray, text: np.ndarray) -> float:
    """Share of cells (embeddings [N, D]) whose most similar scene prompt is their scene (top-1)."""
    return float(((emb @ text.T).argmax(1) == y).mean()) if len(y) else float("nan")


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
    return _cut_windows(arr, labels, stride, d["window"], d["overlap"])


def _cut_windows(arr: np.ndarray, labels: np.ndarray, stride: int, window: int, overlap: float):
    """(windows [3, win, win], their cell labels [k, k]) of a normalised image [H, W, 3] with cell labels
    [H // stride, W // stride], at the window steps ``segment`` plans (``window_origins``)."""
    rows, cols = labels.shape
    k = window // stride
    step = max(1, round(k * (1 - overlap)))
    xs, ys = [], []
    for r in window_origins(rows, k, step):
        for c in window_origins(cols, k, step):
            win = arr[r * stride:(r + k) * stride, c * stride:(c + k) * stride]
            if win.shape[0] < k * stride or win.shape[1] < k * stride:  # image smaller than a window
                continue
            xs.append(win.transpose(2, 0, 1))
            ys.append(labels[r:r + k, c:c + k])
    return xs, ys


def _trunk_cells(trunk, windows: list[np.ndarray], batch: int) -> np.ndarray:
    """Trunk features of every cell of ``windows``, [n windows * k * k, C] float32, row-major per window."""
    out = []
    for j in range(0, len(windows), batch):
        with torch.no_grad():
            f = trunk.forward_features(torch.from_numpy(np.stack(windows[j:j + batch])))
        out.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cache_mosaic_features(model, cfg: dict, out: Path, log=print) -> dict:
    """Scene-mosaic cells (training/dense_mosaics.py): features [N, C] float16, scene class [N] int8, val [N]
    bool (cells of canvases drawn only from the held-out share of the pool's images), the class names; cells no
    scene covers enough are dropped. Reused when the key (checkpoint, mosaic and window settings) matches."""
    m, d = cfg["mosaics"], cfg["data"]
    key = {"checkpoint_sha256": cfg["checkpoint_sha256"], "mosaics": {k: v for k, v in m.items() if k != "weight"},
           "window": d["window"], "overlap": d["overlap"], "seed": cfg["seed"]}

    def build() -> dict:
        trunk = model.visual.trunk
        stride = trunk_stride(model)
        feats, labs, vals = [], [], []
        t0 = time.perf_counter()
        for i, (xs, ys, is_val) in enumerate(_mosaic_windows(cfg, stride)):
            f = _trunk_cells(trunk, xs, int(d["batch"]))
            y = np.concatenate([a.reshape(-1) for a in ys])
            keep = y != IGNORE
            feats.append(f[keep].astype(np.float16))
            labs.append(y[keep])
            vals.append(np.full(int(keep.sum()), is_val))
            if (i + 1) % 100 == 0:
                log(f"mosaics: {i + 1} canvases, {sum(map(len, labs))} cells, {time.perf_counter() - t0:.0f} s")
        return {"features": np.concatenate(feats), "labels": np.concatenate(labs), "val": np.concatenate(vals),
                "classes": np.array(mosaic_classes(cfg))}

    return cached_arrays(out, "mosaic_cache", key, build, log)


def _nwpu_items(d: dict) -> list:
    from training.data.detection_sets import nwpu_vhr10_images
    from training.sources import data_path

    items = nwpu_vhr10_images(data_path(d, "nwpu", REPO_ROOT, where="[data]"), d["part"])
    return items[:int(d["max_images"])] if d["max_images"] else items


def _nwpu_windows(items, d: dict, classes: list[str], stride: int):
    """(windows, cell labels, image index) per NWPU image, windows cut as ``_windows`` does."""
    from PIL import Image

    for i, (_, path, boxes) in enumerate(items):
        with Image.open(path) as im:
            img = im.convert("RGB")
        nb = [(classes.index(b.name), (b.xmin, b.ymin, b.xmax, b.ymax)) for b in boxes]
        xs, ys = _windows(img, nb, {"data": d}, stride, len(classes))
        yield xs, ys, i


def _mosaic_windows(cfg: dict, stride: int):
    """(windows, cell labels, is_val) per scene-mosaic canvas (training/dense_mosaics.py): 'train' canvases from
    the pool's images minus a held-out share, then 'val' canvases from that share only."""
    from training.dense_mosaics import aid_training_pool, random_canvases

    m, d = cfg["mosaics"], cfg["data"]
    classes, paths, labels = aid_training_pool(REPO_ROOT / m["aid_root"], REPO_ROOT / m["split"],
                                               (REPO_ROOT / m["exclude"]) if m["exclude"] else None)
    held = split_images(len(paths), float(m["val_share"]), cfg["seed"] + 7)
    for part, count, seed in (("train", int(m["count"]), cfg["seed"]), ("val", int(m["val_count"]), cfg["seed"] + 1)):
        pick = np.flatnonzero(~held if part == "train" else held)
        canvases = random_canvases([paths[i] for i in pick], labels[pick], count, int(m["grid"]),
                                   tuple(m["scene_px"]), stride, float(m["min_cover"]), seed)
        for canvas, _ in canvases:
            arr = (canvas.image.astype(np.float32) / 255.0 - 0.5) / 0.5
            xs, ys = _cut_windows(arr, canvas.labels, stride, d["window"], d["overlap"])
            yield xs, ys, part == "val"


def mosaic_classes(cfg: dict) -> list[str]:
    from training.data.aid import load_split

    return sorted(load_split(REPO_ROOT / cfg["mosaics"]["split"])["train"])


def cache_features(model, cfg: dict, classes: list[str], out: Path, log=print) -> dict:
    """features [N, C] float16, labels [N] int8, image [N] int32 of the kept cells of every window; reused when
    the cache's key (checkpoint, data and label settings) matches."""
    d = {**cfg["data"], **{k: cfg["labels"][k] for k in ("min_cover", "background_max_cover")}}
    key = {"checkpoint_sha256": cfg["checkpoint_sha256"], "data": d, "classes": classes, "seed": cfg["seed"]}

    def build() -> dict:
        items = _nwpu_items(d)
        trunk = model.visual.trunk
        stride = trunk_stride(model)
        rng = np.random.default_rng(cfg["seed"])
        feats, labs, imgs = [], [], []
        t0 = time.perf_counter()
        for xs, ys, i in _nwpu_windows(items, d, classes, stride):
            for j in range(0, len(xs), int(d["batch"])):
                f = _trunk_cells(trunk, xs[j:j + int(d["batch"])], int(d["batch"]))
                y = np.concatenate([a.reshape(-1) for a in ys[j:j + int(d["batch"])]])
                u = rng.random(len(y))
                keep = ((y != IGNORE) & (y != len(classes))) | ((y == len(classes)) & (u < d["keep_background"])) \
                    | ((y == IGNORE) & (u < d["keep_ignored"]))
                feats.append(f[keep].astype(np.float16))
                labs.append(y[keep])
                imgs.append(np.full(int(keep.sum()), i, np.int32))
            if (i + 1) % 50 == 0 or i + 1 == len(items):
                log(f"cached {i + 1}/{len(items)} images, {sum(map(len, labs))} cells, "
                    f"{time.perf_counter() - t0:.0f} s")
        return {"features": np.concatenate(feats), "labels": np.concatenate(labs), "image": np.concatenate(imgs),
                "image_ids": np.array([i for i, _, _ in items])}

    return cached_arrays(out, "cache", key, build, log)


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
    resolve_window(cfg, model)
    proj = model.visual.head.proj
    weight0 = proj.weight.detach().numpy().copy()
    bundle = read_bundle(cfg["templates_from"])
    classes = list(NWPU_VHR10_CLASSES)
    prompts = [readable_name(c)[1] for c in classes]
    text = _class_prompts(model, tokenizer, prompts + list(cfg["labels"]["background_prompts"]),
                          list(bundle.templates))
    logit_scale = float(model.logit_scale.detach().exp())
    if int(cfg["train"]["tail_from_block"]) >= 0:
        return _run_tail(cfg, model, tokenizer, list(bundle.templates), classes, prompts, text, logit_scale, out, log)
    cache = cache_features(model, cfg, classes, out, log)
    val = split_images(len(cache["image_ids"]), float(cfg["data"]["val_share"]), cfg["seed"])[cache["image"]]
    x, y = cache["features"], cache["labels"]
    counts = {name: int((y[~val] == k).sum()) for k, name in enumerate(classes + ["background"])}
    log(f"train cells: {counts}, ignored {int((y[~val] == IGNORE).sum())}; val cells {int(val.sum())}")
    extra, mosaic = [], None
    if int(cfg["mosaics"]["count"]):
        mosaic = cache_mosaic_features(model, cfg, out, log)
        scene_names = [readable_name(str(c))[0] for c in mosaic["classes"]]
        mosaic["text"] = _class_prompts(model, tokenizer, scene_names, list(bundle.templates))
        mv = mosaic["val"]
        log(f"mosaic cells: {int((~mv).sum())} train, {int(mv.sum())} val, {len(scene_names)} scene classes")
        extra.append(CellSet(mosaic["features"][~mv], mosaic["labels"][~mv], mosaic["text"], len(scene_names),
                             float(cfg["mosaics"]["weight"])))
    t0 = time.perf_counter()
    weight, history = train_projection(x[~val], y[~val], weight0, text, len(classes), logit_scale,
                                       cfg["train"], cfg["seed"], log, extra=extra)
    seconds = time.perf_counter() - t0
    xv = x[val].astype(np.float32)
    report = _report(cfg, prompts, logit_scale, seconds, history, xv @ weight0.T, xv @ weight.T, y[val],
                     cache["image"][val], text, classes, "held-out train images", log)
    report["train_cells"] = counts
    if mosaic is not None:
        mv = mosaic["val"]
        xm = mosaic["features"][mv].astype(np.float32)
        _report_mosaics(report, xm @ weight0.T, xm @ weight.T, mosaic["labels"][mv], mosaic["text"], log)
    _save_head(out, {"weight": torch.from_numpy(weight)}, cfg, report)
    return report


def _report(cfg, prompts, logit_scale, seconds, history, emb_before, emb_after, y, image, text, classes, what, log):
    """The run report: cell figures of the held-out NWPU cells before/after, and their cosine to the start."""
    before = cell_figures(emb_before, y, image, text, classes)
    after = cell_figures(emb_after, y, image, text, classes)
    cos = F.cosine_similarity(torch.from_numpy(emb_after), torch.from_numpy(emb_before), dim=-1)
    log(f"{what}: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}; cosine to the global cells "
        f"{float(cos.mean()):.3f}")
    for name in classes:
        log(f"  {name:<20} cell AUC {before['auc'][name]:.3f} -> {after['auc'][name]:.3f}")
    return {"config": cfg, "prompts": prompts, "logit_scale": logit_scale, "train_seconds": seconds, "history": history,
            "val_before": before, "val_after": after, "val_cosine_to_global_mean": float(cos.mean())}


def _report_mosaics(report: dict, emb_before, emb_after, labels, text, log) -> None:
    acc = [scene_accuracy(e, labels, text) for e in (emb_before, emb_after)]
    report["mosaic_val_accuracy"] = {"before": acc[0], "after": acc[1]}
    log(f"held-out mosaic cells ({len(labels)}, images never trained on): scene accuracy {acc[0]:.3f} -> {acc[1]:.3f}")


_NOT_IN_HEAD_FILE = ("config", "train_seconds")  # config is stored on its own; seconds differ between reruns


def _save_head(out: Path, head: dict, cfg: dict, report: dict) -> None:
    """The head file and its JSON report. The wall-clock time stays out of the head file: a bundle records that
    file's SHA-256, so a rerun of the same stage must write the same bytes."""
    state = {**head, "checkpoint_sha256": cfg["checkpoint_sha256"], "config": json.dumps(cfg),
             "report": json.dumps({k: v for k, v in report.items() if k not in _NOT_IN_HEAD_FILE})}
    tmp = out / "dense_projection.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "dense_projection.pt")
    (out / "dense_align_report.json").write_text(json.dumps(report, indent=2) + "\n")


def _tail_windows(cfg: dict, model, classes: list[str], out: Path, log=print) -> tuple[dict, np.ndarray]:
    """The window cache of a tail run and, per window, whether it belongs to a held-out NWPU train image."""
    from training.dense_tail import cache_windows

    d = {**cfg["data"], **{k: cfg["labels"][k] for k in ("min_cover", "background_max_cover")}}
    stride = trunk_stride(model)
    items = _nwpu_items(d)
    mosaics = _mosaic_windows(cfg, stride) if int(cfg["mosaics"]["count"]) else ()
    wc = cache_windows(model, cfg, out, int(cfg["train"]["tail_from_block"]),
                       _nwpu_windows(items, d, classes, stride), mosaics, log)
    held = split_images(int(wc["n_images"]), float(cfg["data"]["val_share"]), cfg["seed"])
    return wc, (wc["source"] == 0) & held[np.maximum(wc["image"], 0)]


def _run_tail(cfg, model, tokenizer, templates, classes, prompts, text, logit_scale, out: Path, log=print) -> dict:
    """``run`` with ``train.tail_from_block`` >= 0: the trunk's last stages train with the projection
    (training/dense_tail.py) on window-level caches of the same NWPU cells and scene mosaics."""
    from training.data.names import readable_name
    from training.dense_tail import DenseTail, tail_embeddings

    start = int(cfg["train"]["tail_from_block"])
    try:  # before the long window pass: a bad block number or trunk fails at once
        tail = DenseTail(model.visual.trunk, start, model.visual.head.proj.weight)
    except ValueError as exc:
        raise ConfigError(f"train.tail_from_block: {exc}") from exc
    wc, nwpu_val = _tail_windows(cfg, model, classes, out, log)
    nwpu_train = (wc["source"] == 0) & ~nwpu_val
    feats, labels = wc["features"], wc["labels"]
    k2 = labels.shape[1] * labels.shape[2]
    sets = [(feats[nwpu_train], labels[nwpu_train], text, len(classes), 1.0)]
    scene_text = None
    if int(cfg["mosaics"]["count"]):
        scene_text = _class_prompts(model, tokenizer, [readable_name(c)[0] for c in mosaic_classes(cfg)], templates)
        mo_train = (wc["source"] == 1) & ~wc["val"]
        sets.append((feats[mo_train], labels[mo_train], scene_text, len(scene_text), float(cfg["mosaics"]["weight"])))
    log(f"tail from block {start}: {int(nwpu_train.sum())} NWPU train windows, {int(nwpu_val.sum())} held out; "
        f"{int(((wc['source'] == 1) & ~wc['val']).sum())} mosaic train windows, {int(wc['val'].sum())} held out")
    emb_before = tail_embeddings(tail, feats[nwpu_val])
    mos_before = tail_embeddings(tail, feats[wc["val"]]) if scene_text is not None else None
    t0 = time.perf_counter()
    history = train_tail(tail, sets, logit_scale, cfg["train"], cfg["seed"], log)
    seconds = time.perf_counter() - t0
    emb_after = tail_embeddings(tail, feats[nwpu_val])
    y, image = labels[nwpu_val].reshape(-1), np.repeat(wc["image"][nwpu_val], k2)
    report = _report(cfg, prompts, logit_scale, seconds, history, emb_before, emb_after, y, image, text, classes,
                     "held-out train images (all cells)", log)
    report["tail_from_block"] = start
    if scene_text is not None:
        my = labels[wc["val"]].reshape(-1)
        lab = my != IGNORE
        _report_mosaics(report, mos_before[lab], tail_embeddings(tail, feats[wc["val"]])[lab], my[lab], scene_text, log)
    _save_head(out, {"weight": tail.proj.detach().clone(), "tail": tail.trunk_state(), "tail_from_block": start},
               cfg, report)
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


def _projection_val_cells(run: Path, state: dict | None, checkpoint: Path | None):
    """(embeddings, labels, image) of the held-out cells of a projection run's cell cache."""
    cfg = json.loads((run / "cache.json").read_text())["key"]
    with np.load(run / "cache.npz") as z:
        image, y = z["image"], z["labels"]
        val = split_images(len(z["image_ids"]), float(cfg["data"]["val_share"]), int(cfg["seed"]))[image]
        x = z["features"][val].astype(np.float32)
    if state is None:
        from training.checkpoint import load_checkpoint

        if checkpoint is None:
            raise ConfigError("threshold: give --projection (trained head) or --checkpoint (its global projection)")
        sd = load_checkpoint(checkpoint)["state_dict"]
        weight = next(v for k, v in sd.items() if k.endswith("visual.head.proj.weight")).numpy()
    else:
        weight = state["weight"].numpy()
    return x @ weight.T, y[val], image[val]


def _tail_val_cells(run: Path, state: dict, checkpoint: Path | None, background: int):
    """(embeddings, labels, image) of the held-out NWPU cells of a tail run's window cache, background cells
    (label ``background``) thinned to ``data.keep_background`` by a seeded draw, as a projection run's cell cache
    keeps them (so the cell precision the threshold rule reads means the same for both kinds of head)."""
    from training.checkpoint import load_run_model
    from training.dense_tail import DenseTail, load_tail_into_trunk, tail_embeddings

    if checkpoint is None or sha256(checkpoint) != state["checkpoint_sha256"]:
        raise ConfigError("threshold: a head with trained trunk stages needs --checkpoint, the checkpoint it was "
                          "trained on (its tail is rebuilt from it)")
    cfg = json.loads(state["config"])
    with np.load(run / "window_cache.npz") as z:
        source, image, labels = z["source"], z["image"], z["labels"]
        held = split_images(int(z["n_images"]), float(cfg["data"]["val_share"]), int(cfg["seed"]))
        pick = (source == 0) & held[np.maximum(image, 0)]
        feats = z["features"][pick]
    model, _, _ = load_run_model(checkpoint.parent, checkpoint)
    load_tail_into_trunk(model.visual.trunk, state["tail"])
    tail = DenseTail(model.visual.trunk, int(state["tail_from_block"]), state["weight"])
    emb = tail_embeddings(tail, feats)
    k2 = labels.shape[1] * labels.shape[2]
    y, img = labels[pick].reshape(-1), np.repeat(image[pick], k2)
    u = np.random.default_rng(int(cfg["seed"])).random(len(y))
    keep = (y != background) | (u < float(cfg["data"]["keep_background"]))
    return emb[keep], y[keep], img[keep]


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
    state = load_projection(projection) if projection is not None else None
    if state is not None and "tail" in state:
        emb, y, image = _tail_val_cells(run, state, checkpoint, len(NWPU_VHR10_CLASSES))
    else:
        emb, y, image = _projection_val_cells(run, state, checkpoint)
    emb = l2_normalize(emb)
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


def write_threshold(bundle_dir: Path, pick: dict, command: str) -> Path:
    """Put a picked threshold into the bundle's model.json (``dense.threshold``, and how it was picked in
    ``dense.threshold_pick``), atomically; the result must still read as a bundle."""
    from rsclip_geo.runtime.bundle import MODEL_JSON, read_bundle

    path = Path(bundle_dir) / MODEL_JSON
    d = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(d.get("dense"), dict):
        raise ConfigError(f"{path}: the bundle has no dense head to calibrate")
    figures = pick.get("recall_precision") or pick.get("f1")
    d["dense"]["threshold"] = pick["threshold"]
    d["dense"]["threshold_pick"] = (f"{command}: {pick['rule']} ({json.dumps(figures)}) on held-out NWPU VHR-10 "
                                    "train images; never test images")
    tmp = path.with_name(MODEL_JSON + ".tmp")
    tmp.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    read_bundle(bundle_dir)
    return path


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
    if "tail" in state:  # trained last stages: the dense head's copy of the trunk gets them
        from training.dense_tail import load_tail_into_trunk

        load_tail_into_trunk(model.visual.trunk, state["tail"])
    with written_folder(out, overwrite) as tmp:
        for f in Path(bundle_dir).iterdir():
            if f.is_file() and f.name != bundle.dense.file:
                shutil.copy2(f, tmp / f.name)
        raw, _ = par.parity_images(None)
        images = Preprocessor(bundle.image)(raw)
        weights = "fp32" if getattr(bundle.dense, "weights", "fp32") == "fp32" else "fp16"  # as the bundle's
        spec = export_dense(model, tmp, images, tmp / bundle.image_encoder, bundle.dense.window // bundle.dense.stride,
                            projection=state["weight"].numpy(), weights=weights)
        extra = {"projection_file_sha256": sha256(projection)}
        if "tail" in state:  # the dense head's trunk copy differs from the image encoder's from this block on
            extra["trunk_trained_from_block"] = int(state["tail_from_block"])
        spec = replace(spec, parity={**spec.parity, **extra})
        replace(bundle, dense=spec).write(tmp)
        read_bundle(tmp)
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
        ap.add_argument("--write", action="store_true", help="Also write it into --bundle's model.json.")
        a = ap.parse_args(argv[1:])
        pick = pick_threshold(a.run, a.projection, a.bundle, a.checkpoint, min_precision=a.min_precision)
        print(json.dumps(pick))
        if a.write:
            command = "training.dense_align threshold --run " + str(a.run) + (
                f" --min-precision {a.min_precision}" if a.min_precision is not None else "")
            print(write_threshold(a.bundle, pick, command))
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
    exit_on_config_error(main)
