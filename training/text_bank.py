"""Text embeddings for captions: cached once when the text tower is locked, computed with grads otherwise.

Why: with a locked text tower (LiT-style) every caption's embedding is constant, so training only
runs the image tower; this roughly halves a CPU step and removes dropout noise from the targets.
"""

from __future__ import annotations

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


class TextBank:
    """caption -> embedding; `lookup` serves cached rows (locked) or encodes with grads (unlocked)."""

    def __init__(self, model, tokenizer, locked: bool):
        self.model, self.tokenizer, self.locked = model, tokenizer, locked
        self.index: dict[str, int] = {}
        self.table = None

    def precompute(self, captions: list[str]) -> None:
        new = [c for c in dict.fromkeys(captions) if c not in self.index]
        if not self.locked or not new:
            return
        emb = encode_texts(self.model, self.tokenizer, new)
        base = len(self.index)
        self.index.update({c: base + i for i, c in enumerate(new)})
        self.table = emb if self.table is None else torch.cat([self.table, emb])

    def lookup(self, captions: list[str], device) -> torch.Tensor:
        if self.locked:
            self.precompute(captions)
            return self.table[[self.index[c] for c in captions]].to(device)
        return self.model.encode_text(self.tokenizer(captions).to(device), normalize=True)
