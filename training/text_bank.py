"""Text embeddings for captions: cached once when the text tower is locked, computed with grads otherwise.

Why: with a locked text tower (LiT-style) every caption's embedding is constant, so training only
runs the image tower; this roughly halves a CPU step and removes dropout noise from the targets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """[N, D] L2-normalised embeddings of texts, text tower in eval mode (no dropout)."""
    was_training = model.text.training
    model.text.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        out.append(model.encode_text(tokenizer(texts[i:i + batch_size]), normalize=True).float())
    model.text.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def text_cache_name(model_cfg: dict) -> str:
    """File name of the on-disk caption-embedding cache of a locked text tower (keyed by its config)."""
    key = json.dumps(model_cfg.get("text_cfg", model_cfg), sort_keys=True) + str(model_cfg.get("embed_dim"))
    return f"text_bank_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


class TextBank:
    """caption -> embedding; `lookup` serves cached rows (locked) or encodes with grads (unlocked).

    With a `cache_file`, embeddings of a locked tower persist across runs (a restart skips re-encoding
    tens of thousands of captions, minutes on a 2-core CPU); the file is keyed by the text tower's config.
    """

    def __init__(self, model, tokenizer, locked: bool, cache_file: Path | None = None):
        self.model, self.tokenizer, self.locked = model, tokenizer, locked
        self.index: dict[str, int] = {}
        self.table = None
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._cached: dict[str, torch.Tensor] = {}
        if self.locked and self.cache_file is not None and self.cache_file.is_file():
            saved = torch.load(self.cache_file, map_location="cpu", weights_only=True)
            self._cached = dict(zip(saved["captions"], saved["embeddings"]))

    def precompute(self, captions: list[str]) -> None:
        new = [c for c in dict.fromkeys(captions) if c not in self.index]
        if not self.locked or not new:
            return
        todo = [c for c in new if c not in self._cached]
        if todo:
            fresh = encode_texts(self.model, self.tokenizer, todo)
            self._cached.update(zip(todo, fresh))
            self._save()
        emb = torch.stack([self._cached[c] for c in new])
        base = len(self.index)
        self.index.update({c: base + i for i, c in enumerate(new)})
        self.table = emb if self.table is None else torch.cat([self.table, emb])

    def _save(self) -> None:
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_suffix(".tmp")
        caps = list(self._cached)
        torch.save({"captions": caps, "embeddings": torch.stack([self._cached[c] for c in caps])}, tmp)
        tmp.replace(self.cache_file)

    def lookup(self, captions: list[str], device) -> torch.Tensor:
        if self.locked:
            self.precompute(captions)
            return self.table[[self.index[c] for c in captions]].to(device)
        return self.model.encode_text(self.tokenizer(captions).to(device), normalize=True)


@dataclass(frozen=True)
class ClassPrototypes:
    """One scene-class set's classes as text: each class's mean caption embedding, L2-normalised [C, D]."""

    rows: dict[str, int]
    embeddings: torch.Tensor


def class_prototypes(bank: TextBank, sources, device="cpu") -> dict[int, ClassPrototypes]:
    """source index -> its classes' prototypes on ``device``, for every source whose groups are classes (needs a
    locked tower: the prototypes are computed, and moved to the device, once)."""
    if not bank.locked:
        raise ValueError("the class-bank loss needs a locked text tower (LiT): its class prototypes are fixed")
    out = {}
    for k, src in enumerate(sources):
        if not src.classes:
            continue
        names = sorted(src.captions)
        means = torch.stack([bank.lookup(src.captions[n], device).mean(dim=0) for n in names])
        out[k] = ClassPrototypes({n: i for i, n in enumerate(names)}, torch.nn.functional.normalize(means, dim=-1))
    return out
