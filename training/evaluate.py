"""Zero-shot classification accuracy of an open_clip model on image tensors, with per-class numbers.

Why: the shipped model is judged by zero-shot top-1 on the held-out seen AID images (24-way) and on
the six unseen classes (6-way), with the same generic templates and readable class names a user
would type (rsclip_geo.runtime.prompts), never the richer training captions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.augment import normalize
from training.text_bank import encode_texts


def eval_templates():
    from rsclip_geo.runtime.prompts import DEFAULT_TEMPLATES

    return tuple(DEFAULT_TEMPLATES)


def readable(name: str) -> str:
    from rsclip_geo.runtime.prompts import humanize_class_name

    return humanize_class_name(name)


@torch.no_grad()
def class_embeddings(model, tokenizer, classnames: list[str], templates) -> torch.Tensor:
    """[C, D] template-ensemble class embeddings (mean of normalised prompts, renormalised)."""
    rows = []
    for name in classnames:
        e = encode_texts(model, tokenizer, [t.format(name) for t in templates])
        rows.append(torch.nn.functional.normalize(e.mean(0), dim=0))
    return torch.stack(rows)


@torch.no_grad()
def image_embeddings(model, images_u8: torch.Tensor, mean, std, batch_size: int = 128, device="cpu"):
    """[N, D] normalised image embeddings of uint8 NCHW images already at the model's size."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, images_u8.shape[0], batch_size):
        x = normalize(images_u8[i:i + batch_size], mean, std).to(device)
        out.append(model.encode_image(x, normalize=True).float().cpu())
    model.train(was)
    return torch.cat(out)


def zero_shot(model, tokenizer, images_u8, labels, classes, mean, std, templates=None, device="cpu") -> dict:
    """Top-1 accuracy overall and per class; classes are folder names, prompts use readable names."""
    templates = templates or eval_templates()
    text = class_embeddings(model, tokenizer, [readable(c) for c in classes], templates)
    img = image_embeddings(model, images_u8, mean, std, device=device)
    pred = (img @ text.t().cpu()).argmax(1)
    labels = torch.as_tensor(labels)
    per_class = {c: float((pred[labels == i] == i).float().mean()) for i, c in enumerate(classes)}
    return {"top1": float((pred == labels).float().mean()), "n": int(labels.numel()), "per_class": per_class,
            "templates": list(templates)}


def format_table(title: str, result: dict) -> str:
    lines = [f"{title}: top-1 {result['top1']:.4f} (n={result['n']})"]
    lines += [f"  {c:<20s} {a:.3f}" for c, a in result["per_class"].items()]
    return "\n".join(lines)


def _main() -> None:
    import argparse

    from training.checkpoint import load_run_model
    from training.data.aid import aid_subset, load_split
    from training.data.image_cache import load_images

    ap = argparse.ArgumentParser(description="Zero-shot AID eval (held-out seen 24-way, unseen 6-way).")
    ap.add_argument("--run", type=Path, required=True, help="run folder with model_config.json")
    ap.add_argument("--checkpoint", type=Path, help="default: RUN/checkpoint_last.pt")
    ap.add_argument("--aid", type=Path, default=Path("../shared/data/aid"))
    ap.add_argument("--cache", type=Path, default=Path(".cache"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, tokenizer, cfg = load_run_model(args.run, args.checkpoint)
    size = cfg["vision_cfg"]["image_size"]
    from training.model import IMAGE_MEAN, IMAGE_STD

    split, report = load_split(), {}
    for part in ("val", "unseen"):
        sub = aid_subset(args.aid, part, split)
        imgs = load_images(sub.paths, size, args.cache)
        report[part] = zero_shot(model, tokenizer, imgs, sub.labels, list(sub.classes), IMAGE_MEAN, IMAGE_STD)
        print(format_table(f"AID {part} ({len(sub.classes)}-way)", report[part]), flush=True)
    (args.run / "eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _main()
