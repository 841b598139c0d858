"""Train the RSCLIP contrastive model: `python -m training.train --config training/configs/default.toml`.

A config with a [recipe] table (default.toml) builds the whole shipped bundle into --out: its own run, then the
recipe's stages (training/recipe.py); --run-only trains just the config's run.

One run's flow: TOML config -> model (ImageNet image trunk, MiniLM text tower, locks) -> sources mixed by
weight -> optional linear probe of the head (checkpoint_probe.pt) -> epochs of multi-positive
InfoNCE (checkpoint_last.pt + quick zero-shot val each epoch) -> optional WiSE-FT mix chosen on
seen val (checkpoint_final.pt, the model to export). JSON lines in OUT/log.jsonl.
--resume continues from a checkpoint's next epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import DEFAULTS, ConfigError, exit_on_config_error, load_config
from training.environment import describe_environment
from training.loop import train_epoch
from training.mixing import MixedBatches
from training.model import IMAGE_MEAN, IMAGE_STD
from training.optim import make_optimizer
from training.probe import fit_head
from training.recipe import build as recipe_build
from training.setup import build_run_model, text_fully_locked
from training.sources import build_sources
from training.text_bank import TextBank, class_prototypes, text_cache_name
from training.wise import wise_select

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("training")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_val(cfg: dict, image_size: int, cache_dir: Path):
    """Held-out AID images at the model size for the per-epoch quick zero-shot check (None if disabled)."""
    if not cfg["eval"]["every"]:
        return None
    from training.data.aid import aid_subset, load_split
    from training.data.image_cache import load_images

    split = load_split(REPO_ROOT / cfg["eval"]["split"]) if cfg["eval"]["split"] else None
    sub = aid_subset((REPO_ROOT / cfg["eval"]["aid_root"]).resolve(), cfg["eval"]["part"], split)
    return load_images(sub.paths, image_size, cache_dir), sub.labels, list(sub.classes)


def run(cfg: dict, out: Path, resume: Path | None = None, cache_dir: Path | None = None,
        probe_from: Path | None = None) -> dict:
    """Train per cfg into `out`; returns the last epoch's summary record.

    probe_from: reuse checkpoint_probe.pt of an earlier run of the same [model]/[lock]/[[datasets]]/[probe]/
    seed/batch settings instead of fitting the head again (the probe stage is deterministic and uses no global
    RNG, so the epochs that follow are the same as after a fresh probe; it saves the trunk-feature pass).
    """
    tc = cfg["train"]
    torch.set_num_threads(tc["threads"])
    seed_everything(cfg["seed"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, model_cfg = build_run_model(cfg, out)
    model.to(device)
    if tc["channels_last"]:
        model.visual.to(memory_format=torch.channels_last)
    sources = build_sources(cfg["datasets"], REPO_ROOT, cache_dir)
    bank = TextBank(model, tokenizer, locked=text_fully_locked(model),
                    cache_file=(cache_dir / text_cache_name(model_cfg)) if cache_dir else None)
    bank.precompute([c for s in sources for caps in s.captions.values() for c in caps])
    optimizer = make_optimizer(model, cfg["optim"])
    mixer = MixedBatches(sources, tc["batch_size"], cfg["seed"], tc["samples_per_epoch"] or None)
    start = 0
    if resume is not None:
        state = load_checkpoint(resume)
        model.load_state_dict(state["state_dict"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    image_size = model_cfg["vision_cfg"]["image_size"]
    val = make_val(cfg, image_size, cache_dir)
    prototypes = class_prototypes(bank, sources, device) if tc["class_bank_weight"] > 0 else {}
    ctx = dict(cfg=cfg, model=model, tokenizer=tokenizer, optimizer=optimizer, bank=bank, mixer=mixer,
               sources=sources, device=device, image_size=image_size, prototypes=prototypes)
    record: dict = {}
    with open(out / "log.jsonl", "a", encoding="utf-8") as log_file:
        log_file.write(json.dumps(describe_environment(tc["threads"])) + "\n")
        if resume is None and probe_from is not None:
            state = load_checkpoint(probe_from)
            if state.get("name") != cfg["model"]["config"] or state.get("epoch") != 0:
                raise ValueError(f"{probe_from}: not a probe-stage checkpoint of {cfg['model']['config']}")
            model.load_state_dict(state["state_dict"], strict=True)
            if Path(probe_from).resolve() != (out / "checkpoint_probe.pt").resolve():
                save_checkpoint(out / "checkpoint_probe.pt", 0, cfg["model"]["config"], model)
            rec = {"probe_from": str(probe_from)}
            log_file.write(json.dumps(rec) + "\n")
            log.info("%s", rec)
        elif resume is None and cfg["probe"]["steps"] > 0:
            rec = fit_head(ctx, cfg["probe"])
            rec["probe_val_top1"] = round(_val_top1(ctx, val), 4) if val is not None else None
            save_checkpoint(out / "checkpoint_probe.pt", 0, cfg["model"]["config"], model)
            log_file.write(json.dumps(rec) + "\n")
            log.info("%s", rec)
        for epoch in range(start, tc["epochs"]):
            summary = train_epoch(ctx, epoch, log_file)
            record = {"epoch": epoch + 1, "train_loss": round(summary["loss"], 5),
                      "epoch_seconds": round(summary["seconds"], 1),
                      "logit_scale": round(model.logit_scale.exp().item(), 4)}
            if val is not None and ((epoch + 1) % cfg["eval"]["every"] == 0 or epoch + 1 == tc["epochs"]):
                record["val_top1"] = round(_val_top1(ctx, val), 4)
            save_checkpoint(out / "checkpoint_last.pt", epoch + 1, cfg["model"]["config"], model, optimizer)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            log.info("%s", record)
        if cfg["wise"]["alphas"] and val is not None:
            record.update(_wise(ctx, val, out))
            log_file.write(json.dumps(record) + "\n")
            log.info("%s", record)
    return record


def _val_top1(ctx: dict, val) -> float:
    from training.evaluate import zero_shot

    return zero_shot(ctx["model"], ctx["tokenizer"], val[0], val[1], val[2], IMAGE_MEAN, IMAGE_STD,
                     device=ctx["device"])["top1"]


def _wise(ctx: dict, val, out: Path) -> dict:
    """WiSE-FT mix of checkpoint_probe.pt and the fine-tuned weights -> checkpoint_final.pt."""
    cfg, model = ctx["cfg"], ctx["model"]
    probe = load_checkpoint(out / "checkpoint_probe.pt")["state_dict"]
    ft = {k: v.detach().clone() for k, v in model.state_dict().items()}
    alpha, acc = wise_select(model, probe, ft, cfg["wise"]["alphas"], cfg["wise"]["tolerance"],
                             lambda m: _val_top1(ctx, val))
    save_checkpoint(out / "checkpoint_final.pt", cfg["train"]["epochs"], cfg["model"]["config"], model,
                    extra={"wise_alpha": alpha, "wise_val_top1": acc})
    return {"wise_alpha": alpha, "wise_val_top1": {str(a): round(v, 4) for a, v in acc.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\nOne run")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/default"),
                    help="the run folder (a [recipe] config: where the rebuilt bundle goes)")
    ap.add_argument("--resume", type=Path, help="go on from this checkpoint_last.pt of the run")
    ap.add_argument("--probe-from", type=Path, help="reuse the probe-stage checkpoint of an earlier run of this config")
    ap.add_argument("--cache", type=Path, default=REPO_ROOT / ".cache", help="decoded-image cache folder")
    ap.add_argument("--run-only", action="store_true", help="a [recipe] config: train its own run, not the bundle")
    ap.add_argument("--dry-run", action="store_true", help="a [recipe] config: list the stages still to run")
    ap.add_argument("--overwrite", action="store_true", help="a [recipe] config: replace an existing bundle at --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_config(args.config)
    recipe = cfg["recipe"] if cfg["recipe"] != DEFAULTS["recipe"] and not args.run_only else None
    if recipe is None and (args.dry_run or args.overwrite):
        ap.error("--dry-run and --overwrite are for a config with a [recipe] table (the whole bundle)")
    if recipe is not None:
        if args.resume or args.probe_from:
            ap.error("a [recipe] config resumes each stage by itself; --resume / --probe-from are for --run-only")
        try:
            return recipe_build(recipe, args.config, args.out, overwrite=args.overwrite, dry_run=args.dry_run)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            sys.exit(f"error: {exc}")
    t0 = time.time()
    record = run(cfg, args.out, args.resume, args.cache, args.probe_from)
    record["wall_seconds"] = round(time.time() - t0, 1)
    (args.out / "train_summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("done in %.1f s: %s", time.time() - t0, record)
    return 0


if __name__ == "__main__":
    exit_on_config_error(main)
