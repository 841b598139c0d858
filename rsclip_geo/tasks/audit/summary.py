"""How far a label layer agrees with its imagery, overall and per class, with 95 % confidence intervals.

Three estimates over the scored units (features with at least one window):

- ``mean``: mean agreement (the model's probability of each unit's own label),
  with a percentile bootstrap interval (1,000 resamples of the units, seed 0);
- ``area_mean``: the same weighted by unit area (inside the scene): the
  expected share of the map's area whose label the imagery supports, the
  estimate to compare with a map's area accuracy (bootstrap as above);
- ``agree``: the share of units whose best label is their own, with a Wilson
  score interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP = 1000
_CHUNK = 50  # resamples drawn at once (bounded memory for many units)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def bootstrap_mean(values: np.ndarray, weights: np.ndarray | None = None, resamples: int = BOOTSTRAP,
                   seed: int = 0) -> tuple[float, float, float]:
    """(weighted) mean and its 95 % percentile-bootstrap interval over units."""
    values = np.asarray(values, np.float64)
    w = np.ones_like(values) if weights is None else np.asarray(weights, np.float64)
    n = len(values)
    if n == 0 or w.sum() <= 0:
        return (float("nan"),) * 3
    mean = float((w * values).sum() / w.sum())
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, resamples, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        ws = w[idx]
        stats.append((ws * values[idx]).sum(axis=1) / np.maximum(ws.sum(axis=1), 1e-300))
    low, high = np.percentile(np.concatenate(stats), [2.5, 97.5])
    return mean, float(low), float(high)


def _no_nan(value):
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass(frozen=True)
class Agreement:
    n: int
    mean: float
    mean_low: float
    mean_high: float
    agree: float
    agree_low: float
    agree_high: float
    flagged: int
    area_mean: float
    area_low: float
    area_high: float

    @classmethod
    def of(cls, agreement: np.ndarray, own_is_best: np.ndarray, flagged: np.ndarray, area: np.ndarray) -> "Agreement":
        n = len(agreement)
        k = int(np.count_nonzero(own_is_best))
        return cls(n, *bootstrap_mean(agreement), k / n if n else float("nan"), *wilson(k, n),
                   int(np.count_nonzero(flagged)), *bootstrap_mean(agreement, area))

    def line(self, name: str) -> str:
        return (f"{name:<24} {self.n:>6} {self.mean:6.3f} [{self.mean_low:.3f}, {self.mean_high:.3f}]  "
                f"{self.area_mean:6.3f} [{self.area_low:.3f}, {self.area_high:.3f}]  "
                f"{self.agree:6.3f} [{self.agree_low:.3f}, {self.agree_high:.3f}] {self.flagged:>7}")


@dataclass
class AuditSummary:
    """What an audit found; printed at the end of a run and stored in the output file's metadata."""

    labels: str
    scene: str
    field: str
    n_features: int
    flag_below: float
    overall: Agreement | None = None
    per_class: dict[str, Agreement] = field(default_factory=dict)
    label_words: dict[str, str] = field(default_factory=dict)  # field value -> what the model read
    repaired: list[int] = field(default_factory=list)  # feature positions whose geometry make_valid repaired
    outside: int = 0
    no_window: int = 0
    no_label: int = 0
    windows_encoded: int = 0
    windows_skipped: int = 0
    seconds: float = 0.0
    provider: str = ""
    model: str = ""
    tile_width_px: int = 0
    tile_height_px: int = 0
    min_segment_px: int | None = None  # class rasters: sieve size, and the pixels it changed
    sieved_px: int | None = None

    def to_dict(self) -> dict:
        """Plain JSON types; NaN (an empty class, a unit without windows) becomes None (strict JSON has no NaN)."""
        return _no_nan(asdict(self))

    def describe(self) -> str:
        lines = [f"audit of {self.labels} (field {self.field!r}) over {self.scene}: {self.n_features} features, "
                 f"{self.overall.n if self.overall else 0} scored with {self.windows_encoded} windows of "
                 f"{self.tile_width_px}x{self.tile_height_px} px ({self.windows_skipped} skipped: invalid pixels); "
                 f"{self.seconds:.1f} s on {self.provider} with model {self.model}"]
        notes = [f"{len(self.repaired)} invalid geometries repaired (features {self.repaired[:10]}"
                 + (" ...)" if len(self.repaired) > 10 else ")") if self.repaired else "",
                 f"{self.outside} outside the scene" if self.outside else "",
                 f"{self.no_window} without a valid window" if self.no_window else "",
                 f"{self.no_label} without a label" if self.no_label else "",
                 f"sieve of {self.min_segment_px} px merged {self.sieved_px} class pixels into their neighbours"
                 if self.sieved_px else ""]
        if any(notes):
            lines.append("not scored / repaired: " + "; ".join(n for n in notes if n))
        lines.append(f"{'class':<24} {'n':>6} {'agreement [95% CI]':<22} {'area-weighted':<22} "
                     f"{'own label best':<22} {'flagged':>7}")
        for name, stats in self.per_class.items():
            lines.append(stats.line(name))
        if self.overall:
            lines.append(self.overall.line("all"))
        lines.append(f"flag: best label is not the feature's own and agreement < {self.flag_below:g}")
        return "\n".join(lines)
