"""The dense head's trainable tail: the last stages of a conv trunk, its head conv and the per-cell projection.

Why: a linear projection per cell can only re-weigh what the frozen trunk put in the cell; near a seam between
scenes (or around an object) the last stages have already mixed the whole window into every cell. Training the
last stages of the *dense head's own copy* of the trunk (the bundle's image encoder keeps the global weights)
lets cells learn to say what lies under them, as FarSLIP fine-tunes the model for region-level alignment.

Features entering ``trunk.blocks[start]`` are cached once per window (``cache_windows``); training runs only the
tail, with a frozen copy of it as the distillation target (training/dense_align.py, ``train.tail_from_block``).
BatchNorm layers keep their running statistics (eval mode), only weights and affine parameters learn.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch

from training.keyed_cache import cached_arrays


class DenseTail(torch.nn.Module):
    """``trunk.blocks[start:]`` + ``conv_head`` + ``bn2`` of a timm EfficientNet-style trunk, then a linear
    projection of every cell: features [B, C, h, w] entering blocks[start] -> cell embeddings [B * k * k, D]."""

    def __init__(self, trunk, start: int, projection: torch.Tensor):
        super().__init__()
        missing = [a for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2") if not hasattr(trunk, a)]
        if missing:
            raise ValueError(f"tail_from_block needs a timm EfficientNet-style trunk; {type(trunk).__name__} has no "
                             f"{', '.join(missing)}")
        if not 0 <= start < len(trunk.blocks):
            raise ValueError(f"tail_from_block {start} outside the trunk's {len(trunk.blocks)} blocks")
        self.start = start
        self.blocks = torch.nn.Sequential(*[copy.deepcopy(b) for b in trunk.blocks[start:]])
        self.conv_head, self.bn2 = copy.deepcopy(trunk.conv_head), copy.deepcopy(trunk.bn2)
        self.proj = torch.nn.Parameter(projection.detach().clone().float())

    def cells(self, features: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv_head(self.blocks(features)))
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.cells(features) @ self.proj.T

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The tail's trunk weights under the trunk's own names (``blocks.5.0.conv_dw.weight``, ``conv_head...``)."""
        out = {}
        for name, value in self.state_dict().items():
            if name.startswith("blocks."):
                i, rest = name[len("blocks."):].split(".", 1)
                out[f"blocks.{int(i) + self.start}.{rest}"] = value
            elif name != "proj":
                out[name] = value
        return out


def load_tail_into_trunk(trunk, state: dict[str, torch.Tensor]) -> None:
    """Overwrite the trunk weights a DenseTail trained (``trunk_state``); any unknown or misshaped key is an error."""
    own = trunk.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"tail weights do not fit this trunk: {bad[:5]}")
    trunk.load_state_dict({**own, **state}, strict=True)


def trunk_until(trunk, start: int, windows: np.ndarray) -> torch.Tensor:
    """Features entering ``trunk.blocks[start]`` for normalised windows [B, 3, H, W]."""
    with torch.no_grad():
        x = trunk.bn1(trunk.conv_stem(torch.from_numpy(np.ascontiguousarray(windows))))
        for b in trunk.blocks[:start]:
            x = b(x)
    return x


def cache_windows(model, cfg: dict, out: Path, start: int, nwpu_windows, mosaic_windows, log=print) -> dict:
    """Window-level cache for tail training: per window the features entering blocks[start] (float16) and the
    cell labels [k, k]; ``source`` 0 = NWPU boxes, 1 = scene mosaics; ``image`` (NWPU image index, of
    ``n_images``) and ``val`` (held-out mosaic canvases). ``nwpu_windows`` / ``mosaic_windows``: iterables of
    (windows, labels, image index or val flag) per image/canvas. Reused when the key matches."""
    key = {"checkpoint_sha256": cfg["checkpoint_sha256"], "data": cfg["data"], "labels": cfg["labels"],
           "mosaics": {k: v for k, v in cfg["mosaics"].items() if k != "weight"}, "start": start, "seed": cfg["seed"]}

    def build() -> dict:
        trunk, batch = model.visual.trunk, int(cfg["data"]["batch"])
        feats, labs, source, image, val = [], [], [], [], []
        n_images = 0
        t0 = time.perf_counter()
        for src, items in ((0, nwpu_windows), (1, mosaic_windows)):
            for n, (xs, ys, tag) in enumerate(items):
                n_images += src == 0
                for j in range(0, len(xs), batch):
                    feats.append(trunk_until(trunk, start, np.stack(xs[j:j + batch])).numpy().astype(np.float16))
                labs.extend(ys)
                source.extend([src] * len(ys))
                image.extend([tag if src == 0 else -1] * len(ys))
                val.extend([bool(tag) if src == 1 else False] * len(ys))
                if (n + 1) % 100 == 0:
                    log(f"window cache: source {src}, {n + 1} images/canvases, {len(labs)} windows, "
                        f"{time.perf_counter() - t0:.0f} s")
        cache = {"features": np.concatenate(feats), "labels": np.stack(labs).astype(np.int8),
                 "source": np.array(source, np.int8), "image": np.array(image, np.int32), "val": np.array(val),
                 "n_images": np.array(n_images)}
        log(f"window cache: {len(labs)} windows in {time.perf_counter() - t0:.0f} s")
        return cache

    return cached_arrays(out, "window_cache", key, build, log)


def tail_embeddings(tail: DenseTail, features: np.ndarray, batch: int = 256) -> np.ndarray:
    """Cell embeddings [N * k * k, D] (float32, not normalised) of cached window features [N, C, h, w]."""
    out = []
    tail.eval()
    with torch.no_grad():
        for j in range(0, len(features), batch):
            out.append(tail(torch.from_numpy(features[j:j + batch].astype(np.float32))).numpy())
    return np.concatenate(out)
