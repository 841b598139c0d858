"""A model soup: the weighted average of main runs that started from one checkpoint (Wortsman et al., 2022).

Why: two fine-tuned runs of the main recipe that share their initialisation (the same ``checkpoint_probe.pt``) but
differ in schedule lie in one basin of the loss, so the average of their weights is a model in its own right, often
better than either, at no cost at run time. Runs that do not share the probe checkpoint are refused: averaging
weights from different starts gives noise, not a blend. Float tensors are averaged with the config's weights;
integer buffers (batch-norm step counters) are taken from the first run.

    python -m training.soup --config training/configs/SOUP.toml --out runs/SOUP     # [--overwrite]

``OUT`` then looks like a main run to every later stage (``model_config.json`` and ``checkpoint_final.pt``, e.g.
for ``scripts/reproduce_default_bundle.sh``), plus ``soup.json``: which runs, weights and checkpoint hashes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch

from rsclip_geo.export import file_sha256, written_folder
from training.checkpoint import load_checkpoint
from training.config import ConfigError, exit_on_config_error, merge_config, read_toml

DEFAULTS: dict = {
    "runs": [],                          # main-run folders (each with model_config.json and the checkpoints)
    "weights": [],                       # one per run, > 0, summing to 1
    "checkpoint": "checkpoint_final.pt",  # which checkpoint of each run goes in
}


def load_config(path: Path) -> dict:
    path = Path(path)
    cfg = merge_config(DEFAULTS, read_toml(path), path)
    runs, weights = cfg["runs"], cfg["weights"]
    if len(runs) < 2 or len(weights) != len(runs):
        raise ConfigError(f"{path}: a soup needs at least two runs and one weight per run, got runs {runs} and "
                          f"weights {weights}")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights) \
            or not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
        raise ConfigError(f"{path}: weights must be positive numbers summing to 1, got {weights}")
    return cfg


def average_states(states: list[dict], weights: list[float], names: list[str]) -> dict:
    """sum(w_i * state_i) for float tensors; integer buffers from the first state. ``names`` label the errors."""
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        if state.keys() != first.keys():
            diff = sorted(set(state) ^ set(first))[:5]
            raise ValueError(f"{name}: its weights are not {names[0]}'s model (keys differ: {diff})")
        for k, v in state.items():
            if v.shape != first[k].shape or v.dtype != first[k].dtype:
                raise ValueError(f"{name}: {k} is {tuple(v.shape)} {v.dtype}, {names[0]} has "
                                 f"{tuple(first[k].shape)} {first[k].dtype}")
    out = {}
    for k, v in first.items():
        if v.is_floating_point():
            acc = sum(w * s[k].double() for w, s in zip(weights, states))
            out[k] = acc.to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def _shared_start(runs: list[Path]) -> None:
    """Refuse runs whose probe checkpoints (their common starting point) differ, or whose architectures do."""
    configs = [json.loads((r / "model_config.json").read_text(encoding="utf-8")) for r in runs]
    probes = [load_checkpoint(r / "checkpoint_probe.pt")["state_dict"] for r in runs]
    for run, cfg, probe in zip(runs[1:], configs[1:], probes[1:]):
        if cfg != configs[0]:
            raise ValueError(f"{run}/model_config.json differs from {runs[0]}'s: a soup needs one architecture")
        if probe.keys() != probes[0].keys() or not all(torch.equal(probe[k], probes[0][k]) for k in probe):
            raise ValueError(f"{run}/checkpoint_probe.pt differs from {runs[0]}'s: the runs did not start from one "
                             "checkpoint, so their weights do not average into a model (train with --probe-from)")


def make_soup(cfg: dict, out: Path, overwrite: bool = False) -> Path:
    """Write OUT/{model_config.json, checkpoint_final.pt, soup.json} through a temporary folder renamed into place."""
    runs, out = [Path(r) for r in cfg["runs"]], Path(out)
    for run in runs:
        for name in ("model_config.json", "checkpoint_probe.pt", cfg["checkpoint"]):
            if not (run / name).is_file():
                raise FileNotFoundError(f"{run / name}: missing; a soup's runs are main-run folders "
                                        "(python -m training.train --out RUN)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if any(out.resolve() == r.resolve() for r in runs):
        raise ValueError(f"{out} is one of the soup's own runs; write the soup to a new folder")
    _shared_start(runs)
    checkpoints = [load_checkpoint(r / cfg["checkpoint"]) for r in runs]
    if len({c["name"] for c in checkpoints}) != 1:
        raise ValueError(f"checkpoints name different models: {[c['name'] for c in checkpoints]}")
    state = average_states([c["state_dict"] for c in checkpoints], cfg["weights"], [str(r) for r in runs])
    record = {"runs": [str(r) for r in runs], "weights": cfg["weights"], "checkpoint": cfg["checkpoint"],
              "checkpoint_sha256": [file_sha256(r / cfg["checkpoint"]) for r in runs],
              "epochs": [c["epoch"] for c in checkpoints]}
    with written_folder(out, overwrite) as tmp:
        shutil.copyfile(runs[0] / "model_config.json", tmp / "model_config.json")
        torch.save({"epoch": max(record["epochs"]), "name": checkpoints[0]["name"], "state_dict": state,
                    "soup": record}, tmp / "checkpoint_final.pt")
        (tmp / "soup.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.soup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")
    a = ap.parse_args(argv)
    try:
        print(make_soup(load_config(a.config), a.out, a.overwrite))
    except (OSError, ValueError) as exc:  # missing runs, an existing OUT, runs that do not share a start
        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    exit_on_config_error(main)
