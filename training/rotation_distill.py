"""Rotation distillation: teach the single-view image tower what the quarter-turn ensemble says.

Why: averaging the embeddings of a tile's four quarter turns (``--rotations 4``) lifts every held-out figure of the
default bundle (AID-30 0.931 -> 0.949, UCM 0.957 -> 0.967), but costs four passes per tile. Overhead imagery has
no "up", so the ensemble's answer is what a single pass should give. This stage fine-tunes the bundle's image
tower (read back from its ONNX graph, training/bundle_tower.py) so that one view of any quarter turn of an image
lands on the ensemble's embedding of it (1 - cosine), on the training images of the main recipe's sources (train
parts only; each source capped at ``data.max_per_source`` images). The teacher is the starting bundle through the
runtime itself (``ClipModel(rotations=4)``): exactly what users get from ``--rotations 4``. The target is the same
for all four turns of an image, so the student learns invariance, not a new semantics; the text encoder, the
dense head and the tokenizer stay byte for byte as they were. ``teacher_crops`` adds centred crops to the teacher's
views; ``student_sees_crops`` feeds the student those crops too (one view per image per epoch, drawn by seed).

    python -m training.rotation_distill --config training/configs/rotation_distill.toml \\
        --bundle BUNDLE --out runs/rotation_distill          # [--resume]

Each epoch writes ``OUT/bundle_epoch<N>/`` (the starting bundle with the new image encoder; model.json records where
it came from) and ``OUT/checkpoint_epoch<N>.pt``; pick one with training/model_report.py on the AID-30 held-out
split only. ``python -m training.rotation_distill export --checkpoint OUT/checkpoint_epoch<N>.pt --bundle BUNDLE
-o DIR`` writes that bundle again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from rsclip_geo.export import file_sha256, written_folder
from training.config import ConfigError, base_chain, exit_on_config_error, merge_config, read_toml
from training.environment import describe_environment

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict = {
    "seed": 0,
    "datasets_from": "training/configs/default.toml",  # the [[datasets]] of this training config (train parts)
    "teacher_rotations": 4,
    "teacher_crops": [],  # centre-crop fractions the teacher also sees (each with its turns); [] = the full view only
    "student_sees_crops": False,  # True: each epoch an image comes as one view drawn from the whole and those crops
    "data": {"max_per_source": 6500},  # seeded subsample of each source; 0 = every image
    "train": {"epochs": 1, "batch": 64, "lr": 1e-4, "warmup_share": 0.05, "weight_decay": 0.0, "threads": 2,
              "log_every": 25},
}


def load_config(path: Path) -> dict:
    path = Path(path)
    cfg = merge_config(DEFAULTS, read_toml(path), path)
    from rsclip_geo.runtime.encoder import ROTATIONS

    if cfg["teacher_rotations"] not in ROTATIONS[1:]:
        raise ConfigError(f"{path}: teacher_rotations must be one of {ROTATIONS[1:]}, got {cfg['teacher_rotations']}")
    crops = cfg["teacher_crops"]
    if not isinstance(crops, list) or not all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                              and 0 < c < 1 for c in crops):
        raise ConfigError(f"{path}: teacher_crops must be a list of centre-crop fractions in (0, 1), got {crops!r}")
    if not isinstance(cfg["student_sees_crops"], bool) or (cfg["student_sees_crops"] and not crops):
        raise ConfigError(f"{path}: student_sees_crops must be true or false, and true needs teacher_crops, got "
                          f"{cfg['student_sees_crops']!r} with teacher_crops {crops!r}")
    t = cfg["train"]
    if t["epochs"] < 1 or t["batch"] < 1 or t["lr"] <= 0 or not 0 <= t["warmup_share"] < 1:
        raise ConfigError(f"{path}: [train] needs epochs >= 1, batch >= 1, lr > 0 and 0 <= warmup_share < 1, got {t}")
    return cfg


def centre_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centred square of side ``fraction`` x the image's shorter side (HxWxC)."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    return image[y0:y0 + side, x0:x0 + side]


def training_images(cfg: dict, size: int, resize) -> tuple[list[np.ndarray], dict]:
    """Views of the main recipe's sources (each capped, seeded) and a count per source. Views: uint8
    [N, size, size, 3] arrays, the whole image first, then one per ``teacher_crops`` fraction (cropped from the
    decoded image before resizing, so a crop keeps the detail the source has)."""
    from training.config import load_config as load_training_config
    from training.sources import capped_sources

    specs = load_training_config(REPO_ROOT / cfg["datasets_from"])["datasets"]
    fractions = cfg["teacher_crops"]
    views, counts = [[] for _ in range(1 + len(fractions))], {}
    for source, keep in capped_sources(specs, REPO_ROOT, int(cfg["data"]["max_per_source"]), cfg["seed"]):
        for i in keep:
            image = source.images[int(i)].permute(1, 2, 0).numpy()
            views[0].append(resize(image))
            for view, f in zip(views[1:], fractions):
                view.append(resize(centre_crop(image, f)))
        counts[source.name] = int(len(keep))
    return [np.stack(view) for view in views], counts


def teacher_embeddings(model, views: list[np.ndarray], batch: int = 256) -> np.ndarray:
    """The ensemble's normalised embedding of every image: the mean of the normalised embeddings of all turns of
    all views (the runtime's own preprocessing and turn averaging; one view = exactly ``--rotations``)."""
    from rsclip_geo.runtime.encoder import l2_normalize

    out = []
    for i in range(0, len(views[0]), batch):
        turn_means = [model.encode_images(np.stack([model.preprocess.normalize(im) for im in v[i:i + batch]]),
                                          normalize=False) for v in views]
        out.append(l2_normalize(np.mean(turn_means, axis=0, dtype=np.float32)))
    return np.concatenate(out).astype(np.float32)


def learning_rate(step: int, steps: int, peak: float, warmup_share: float) -> float:
    """Linear warm-up, then cosine to zero."""
    warm = max(1, int(steps * warmup_share))
    return peak * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / steps))


def epoch_batches(n: int, batch: int, seed: int, epoch: int, n_views: int = 1):
    """(item indices, quarter turns, view indices) per step of one epoch; seeded by (seed, epoch) so a resumed run
    is the same (the views are drawn last: with one view, order and turns are what they were before views)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    turns = rng.integers(0, 4, n)
    picks = rng.integers(0, n_views, n) if n_views > 1 else np.zeros(n, dtype=np.int64)
    for i in range(0, n - batch + 1, batch):
        idx = order[i:i + batch]
        yield idx, turns[idx], picks[idx]


def write_epoch_bundle(visual, src: Path, out: Path, record: dict) -> Path:
    """``out``: a copy of ``src`` with the trained image encoder, checked and recorded in model.json."""
    from training.bundle_tower import write_tower, written_parity

    with written_folder(out, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        meta_path = tmp / "model.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        storage = write_tower(visual, src / meta["image_encoder"], tmp / meta["image_encoder"])
        check = written_parity(visual, tmp)
        # wall time varies from run to run: the bundle must rebuild byte for byte
        kept = {k: v for k, v in record.items() if k != "seconds"}
        done = {**kept, "weights_written": storage}
        if "rotation_distill" in meta["source"]:  # a further round: the earlier one's record stays, nested
            done["after"] = meta["source"]["rotation_distill"]
        meta["source"] = {**meta["source"], "rotation_distill": done}
        parity = meta.setdefault("parity", {})
        parity["image_cosine_min"], parity["image_max_abs_diff"] = check["cosine_min"], check["max_abs_diff"]
        parity["image_compared_to"] = ("the rotation-distilled torch tower (training/bundle_tower.py), "
                                       "float16-stored weights")
        stored = parity.get("image_weight_storage")
        if stored:  # the float16 storage record now describes the written file
            stored.update(cosine_min=check["cosine_min"], max_abs_diff=check["max_abs_diff"],
                          compared_to="the rotation-distilled fp32 torch tower it was written from "
                                      "(training/bundle_tower.py)")
            stored.setdefault("weight_storage", {}).update(
                max_abs_rounding=storage["max_abs_rounding"], bytes_after=(tmp / meta["image_encoder"]).stat().st_size)
        # the starting bundle's figures are not this one's: training.model_report --write-card measures it
        (meta.get("card") or {}).pop("evaluation", None)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def run(config: Path, bundle: Path, out: Path, resume: bool = False, log=print) -> list[dict]:
    """Train per ``config`` from ``bundle`` into ``out``; returns one record per epoch trained."""
    import torch

    from rsclip_geo.runtime.encoder import load_model
    from training.bundle_tower import tower_from_bundle
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.keyed_cache import cached_arrays

    cfg = load_config(config)
    tc = cfg["train"]
    torch.set_num_threads(tc["threads"])
    torch.manual_seed(cfg["seed"])
    bundle, out = Path(bundle), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "checkpoint_last.pt"
    if last.exists() and not resume:
        raise FileExistsError(f"{out} holds a run (checkpoint_last.pt); pass --resume to go on or choose another --out")
    teacher = load_model(bundle, threads=tc["threads"], batch_size=64, rotations=cfg["teacher_rotations"])
    t0 = time.perf_counter()
    views, counts = training_images(cfg, teacher.bundle.image.size, teacher.preprocess.resize)
    n_images = len(views[0])
    log(f"{n_images} training images {counts}, {len(views)} view(s) ({time.perf_counter() - t0:.0f} s)")
    image_sha = file_sha256(teacher.bundle.image_encoder_path)
    key = {"image_encoder_sha256": image_sha, "rotations": cfg["teacher_rotations"], "counts": counts,
           "datasets_from": cfg["datasets_from"], "max_per_source": cfg["data"]["max_per_source"], "seed": cfg["seed"]}
    crops = {"teacher_crops": cfg["teacher_crops"]} if cfg["teacher_crops"] else {}  # absent: v2.5's records as made
    key.update(crops)
    targets = cached_arrays(out, "teacher", key, lambda: {"embedding": teacher_embeddings(teacher, views)},
                            log=log)["embedding"]
    if not cfg["student_sees_crops"]:
        del views[1:]
    targets_t = torch.from_numpy(targets)
    visual = tower_from_bundle(bundle)
    visual.eval()  # BatchNorm carries folded weights: never batch statistics
    opt = torch.optim.AdamW(visual.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    start = 0
    if last.exists():
        state = load_checkpoint(last)
        if state.get("name") != image_sha:
            raise ValueError(f"{last} was trained from another image encoder than {teacher.bundle.image_encoder_path}")
        visual.load_state_dict(state["state_dict"], strict=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        log(f"resumed after epoch {start}")
    per_epoch = n_images // tc["batch"]
    steps = per_epoch * tc["epochs"]
    student = {"student_sees_crops": True} if cfg["student_sees_crops"] else {}  # absent: earlier records as made
    bases = [{"config": str(b), "sha256": file_sha256(b)} for b in base_chain(Path(config))]
    inherited = {"config_bases": bases} if bases else {}  # likewise
    record_base = {"from_image_encoder_sha256": image_sha, "teacher_rotations": cfg["teacher_rotations"], **crops,
                   **student, "config": str(config), "config_sha256": file_sha256(Path(config)), **inherited,
                   "images": counts, "stage": "training/rotation_distill.py"}
    records = []
    with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(describe_environment(tc["threads"])) + "\n")
    for epoch in range(start, tc["epochs"]):
        losses, t1 = [], time.perf_counter()
        batches = epoch_batches(n_images, tc["batch"], cfg["seed"], epoch, len(views))
        for k, (idx, turns, picks) in enumerate(batches):
            step = epoch * per_epoch + k
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, steps, tc["lr"], tc["warmup_share"])
            x = np.stack([np.rot90(teacher.preprocess.normalize(views[v][i]), int(t), axes=(1, 2))
                          for i, t, v in zip(idx, turns, picks)])
            emb = torch.nn.functional.normalize(visual(torch.from_numpy(np.ascontiguousarray(x))), dim=-1)
            loss = (1 - (emb * targets_t[idx]).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (k + 1) % tc["log_every"] == 0 or k == 0:
                log(f"epoch {epoch + 1} step {k + 1}/{per_epoch} loss {np.mean(losses[-tc['log_every']:]):.5f} "
                    f"({time.perf_counter() - t1:.0f} s)")
        rec = {**record_base, "epoch": epoch + 1, "epochs": tc["epochs"], "mean_loss": float(np.mean(losses)),
               "seconds": round(time.perf_counter() - t1, 1)}
        save_checkpoint(out / f"checkpoint_epoch{epoch + 1}.pt", epoch + 1, image_sha, visual, extra={"record": rec})
        save_checkpoint(last, epoch + 1, image_sha, visual, opt)
        path = write_epoch_bundle(visual, bundle, out / f"bundle_epoch{epoch + 1}", rec)
        log(f"epoch {epoch + 1}: mean loss {rec['mean_loss']:.5f}, {rec['seconds']:.0f} s -> {path}")
        with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        records.append(rec)
    return records


def export(checkpoint: Path, bundle: Path, out: Path) -> Path:
    """Write ``out`` from an epoch checkpoint of a run and the bundle that run started from (as the run did)."""
    from training.bundle_tower import tower_from_bundle
    from training.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    encoder = Path(bundle) / json.loads((Path(bundle) / "model.json").read_text(encoding="utf-8"))["image_encoder"]
    if state.get("name") != file_sha256(encoder):
        raise ValueError(f"{checkpoint} was trained from another image encoder than the one in {bundle}")
    visual = tower_from_bundle(bundle)
    visual.load_state_dict(state["state_dict"], strict=True)
    return write_epoch_bundle(visual, Path(bundle), Path(out), state["record"])


def main(argv=None) -> int:
    from training.stage_cli import bundle_stage_main

    return bundle_stage_main("training.rotation_distill", __doc__, run, export, argv,
                             checkpoint_help="RUN/checkpoint_epoch<N>.pt",
                             bundle_help="Starting bundle: the teacher and the first weights.")


if __name__ == "__main__":
    exit_on_config_error(main)
