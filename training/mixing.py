"""Weighted mixing of several sources into batches, seeded and resumable by epoch.

Why: datasets differ in size and quality; each batch draws its items' sources with the configured
weights, and each source is walked in a per-epoch shuffled order (no repeats until exhausted).
"""

from __future__ import annotations

import numpy as np

from training.sources import Source


class MixedBatches:
    """Yields lists of (source_index, item_index) of length batch_size for one epoch."""

    def __init__(self, sources: list[Source], batch_size: int, seed: int, samples_per_epoch: int | None = None):
        if not sources:
            raise ValueError("no training sources")
        self.sources = sources
        self.batch_size = batch_size
        self.seed = seed
        w = np.array([s.weight for s in sources], dtype=np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive sum, got {w.tolist()}")
        self.p = w / w.sum()
        self.samples = samples_per_epoch or sum(len(s) for s in sources)

    def steps_per_epoch(self) -> int:
        return max(1, self.samples // self.batch_size)

    def epoch(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        orders = [rng.permutation(len(s)) for s in self.sources]
        pos = [0] * len(self.sources)
        for _ in range(self.steps_per_epoch()):
            which = rng.choice(len(self.sources), size=self.batch_size, p=self.p)
            batch = []
            for si in which:
                if pos[si] >= len(orders[si]):
                    orders[si], pos[si] = rng.permutation(len(self.sources[si])), 0
                batch.append((int(si), int(orders[si][pos[si]])))
                pos[si] += 1
            yield batch
