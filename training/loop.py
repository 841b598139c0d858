"""One training epoch: mixed batches -> augment -> image tower -> multi-positive InfoNCE (+ class bank) -> AdamW step."""

from __future__ import annotations

import contextlib
import json
import time

import torch
from tqdm import tqdm

from training.augment import AugmentConfig, augment_batch, normalize
from training.losses import class_bank_loss, multi_positive_infonce
from training.model import IMAGE_MEAN, IMAGE_STD
from training.optim import lr_factor, set_lr
from training.setup import clamp_logit_scale


def _augment_mixed_sizes(items: list[torch.Tensor], size: int, aug: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augmented [B,3,size,size] batch of uint8 images whose decoded sizes may differ between sources
    (AID at 150 px, RSICD at 160): each size is augmented as one group, in order of first appearance."""
    shapes = list(dict.fromkeys(t.shape for t in items))
    if len(shapes) == 1:
        return augment_batch(torch.stack(items), size, aug, g)
    out = None
    for shape in shapes:
        idx = [k for k, t in enumerate(items) if t.shape == shape]
        part = augment_batch(torch.stack([items[k] for k in idx]), size, aug, g)
        if out is None:
            out = part.new_empty((len(items),) + tuple(part.shape[1:]))
        out[idx] = part
    return out


def make_batch(batch, sources, size: int, aug: AugmentConfig, g: torch.Generator):
    """Augmented, normalised images; one sampled caption per item; integer group ids."""
    items = [sources[s].images[i] for s, i in batch]
    keys = [f"{s}/{sources[s].groups[i]}" for s, i in batch]
    captions = []
    for s, i in batch:
        caps = sources[s].captions[sources[s].groups[i]]
        captions.append(caps[int(torch.randint(0, len(caps), (1,), generator=g))])
    ids = {k: n for n, k in enumerate(dict.fromkeys(keys))}
    groups = torch.tensor([ids[k] for k in keys])
    x = normalize(_augment_mixed_sizes(items, size, aug, g), (0.0,) * 3, (1.0,) * 3)  # [0,255] -> [0,1]
    x = (x - torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return x, captions, groups


def batch_class_bank_loss(batch, sources, prototypes: dict, img: torch.Tensor, logit_scale: torch.Tensor):
    """Mean class-bank cross-entropy over the batch's scene-class items (each against its own set's classes);
    None when the batch holds none."""
    total, n = None, 0
    for k, protos in prototypes.items():
        idx = [j for j, (s, _) in enumerate(batch) if s == k]
        if not idx:
            continue
        targets = torch.tensor([protos.rows[sources[k].groups[batch[j][1]]] for j in idx], device=img.device)
        part = class_bank_loss(img[idx], protos.embeddings, targets, logit_scale) * len(idx)
        total, n = (part if total is None else total + part), n + len(idx)
    return None if total is None else total / n


def train_epoch(ctx, epoch: int, log_file) -> dict:
    """Run one epoch; returns {'loss': mean loss, 'seconds': wall time}."""
    cfg, model, opt, bank, mixer = ctx["cfg"], ctx["model"], ctx["optimizer"], ctx["bank"], ctx["mixer"]
    tc, device = cfg["train"], ctx["device"]
    aug = AugmentConfig(**cfg["augment"])
    g = torch.Generator().manual_seed(cfg["seed"] * 100003 + epoch)
    steps = mixer.steps_per_epoch()
    total = steps * tc["epochs"]
    use_amp = device.type == "cuda" and tc["precision"] == "amp"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
    model.train()
    if bank.locked:
        model.text.eval()
    t0, losses = time.time(), []
    bar = tqdm(mixer.epoch(epoch), total=steps, desc=f"epoch {epoch + 1}/{tc['epochs']}", mininterval=5)
    for step, batch in enumerate(bar):
        gstep = epoch * steps + step
        set_lr(opt, lr_factor(gstep, total, cfg["optim"]["warmup_steps"], cfg["optim"]["min_lr_ratio"]))
        x, captions, groups = make_batch(batch, ctx["sources"], ctx["image_size"], aug, g)
        x = x.to(device)
        if tc["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            img = model.encode_image(x, normalize=True)
            txt = bank.lookup(captions, device)
            loss = multi_positive_infonce(img.float(), txt.float(), groups.to(device), model.logit_scale.exp())
            if ctx.get("prototypes"):
                bank_loss = batch_class_bank_loss(batch, ctx["sources"], ctx["prototypes"], img.float(),
                                                  model.logit_scale.exp())
                if bank_loss is not None:
                    loss = loss + tc["class_bank_weight"] * bank_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp_logit_scale(model, cfg["model"]["max_logit_scale"])
        losses.append(loss.item())
        if step % tc["log_every"] == 0 or step == steps - 1:
            rec = {"epoch": epoch, "step": gstep, "loss": round(losses[-1], 5),
                   "logit_scale": round(model.logit_scale.exp().item(), 4),
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t0, 1)}
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{rec['logit_scale']:.1f}")
    return {"loss": sum(losses) / len(losses), "seconds": time.time() - t0}
