"""Contrastive loss with several positives per row (supervised-contrastive style InfoNCE), and the class-bank loss.

Why: a batch of scene images has many items of the same class; plain CLIP one-hot targets would
push an image away from its own class's other captions. Targets here spread evenly over all
in-batch items of the same group, in both directions (image->text and text->image).
The class-bank loss scores a scene-class image against every class of its set (not only the few classes a
mixed batch of 64 happens to hold), which is exactly the choice zero-shot labelling makes at run time: a
batch rarely puts "center" beside "square" and "commercial area", the classes AID confuses most.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_mask(groups: torch.Tensor) -> torch.Tensor:
    """[B, B] float mask, 1 where items i and j share a group id (diagonal included)."""
    return (groups[:, None] == groups[None, :]).float()


def multi_positive_infonce(image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor,
                           logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy against uniform targets over positives.

    image_emb, text_emb: [B, D] L2-normalised; groups: [B] integer group ids; logit_scale: the
    multiplier (already exp'd). With all groups distinct this equals open_clip's ClipLoss.
    """
    logits = logit_scale * image_emb @ text_emb.t()
    pos = positive_mask(groups).to(logits.dtype)
    target = pos / pos.sum(dim=1, keepdim=True)
    loss_i = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(target * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def class_bank_loss(image_emb: torch.Tensor, prototypes: torch.Tensor, targets: torch.Tensor,
                    logit_scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of images [B, D] over class prototypes [C, D] (L2-normalised), targets [B] in 0..C-1."""
    return F.cross_entropy(logit_scale * image_emb @ prototypes.t(), targets)
