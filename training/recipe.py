"""The shipped default bundle from its main config's ``[recipe]``: every training stage in order, then the assembly.

``python -m training.train --config training/configs/default.toml`` runs this, because that file has a [recipe]
table. Why a recipe and not one run: the shipped bundle is two main runs' weight average (a soup,
``training/soup.py``), a dense head (``training/dense_align.py``), a rotation distillation and a text tuning, and
each of those is its own resumable stage with its own config. Order (MODEL_CARD.md, "Training"):

1. the config's own run (``training.train --run-only``) into the soup config's first run folder;
2. ``second_run_config`` into the soup config's second folder, from the first run's probe checkpoint (a soup needs
   one start);
3. ``training.soup`` into ``soup_run``; 4. the dense head (``training.dense_align``) into ``dense_run``;
5. ``scripts/reproduce_default_bundle.sh``: export, dense head and threshold, rotation distillation (``distill_run``,
   epoch ``distill_epoch``), text tuning (``text_run``), evaluation into model.json, and the byte-for-byte
   comparison with ``rsclip_geo/models/default`` (exit 1 names the files that differ: expected on a CPU model
   other than the one the bundle was built on, where the recipe gives a model of the same recipe, not the same
   bytes).

After the soup and the dense head (found done or just made), their file's SHA-256 is compared with what the shipped
``model.json`` records of it (``source.sha256``, ``dense.parity.projection_file_sha256``), so a rebuild that will
not end on the shipped bytes says so hours before the assembly does; it goes on either way.

A stage whose output exists is skipped and an interrupted one resumed, so after a stop (or in the next session)
the same command goes on where it was. Every stage runs as its own process, exactly as its command in the card.
The run folders are relative to the repository root, as the soup config names them (their names are recorded in
the soup's checkpoint, so they are part of what makes the bundle byte-identical).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from rsclip_geo.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSEMBLY = "scripts/reproduce_default_bundle.sh"
SHIPPED_MODEL_JSON = Path("rsclip_geo/models/default/model.json")


@dataclass(frozen=True)
class Step:
    """One stage: its command, the file whose existence says it is done (None: it always runs), and where the
    shipped model.json records that file's SHA-256 (a key path; None: it does not)."""

    argv: tuple[str, ...]
    done_file: Path | None
    shipped_record: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()  # set for the command only (and shown in its line)

    def done(self, root: Path) -> bool:
        return self.done_file is not None and (root / self.done_file).exists()

    def line(self) -> str:
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in self.env), shlex.join(self.argv)])


def _train_step(py: str, config: str, run: Path, root: Path, probe: Path | None = None) -> Step:
    """A main run: resumed from its last epoch, or from its own probe checkpoint, or started from ``probe``."""
    start: tuple[str, ...] = ()
    if (root / run / "checkpoint_last.pt").is_file():
        start = ("--resume", str(run / "checkpoint_last.pt"))
    elif (root / run / "checkpoint_probe.pt").is_file():
        start = ("--probe-from", str(run / "checkpoint_probe.pt"))
    elif probe is not None:
        start = ("--probe-from", str(probe))
    argv = (py, "-m", "training.train", "--config", config, "--out", str(run), "--run-only", *start)
    return Step(argv, run / "checkpoint_final.pt")


def recipe_steps(recipe: dict, config: Path, out: Path, root: Path = REPO_ROOT,
                 py: str = sys.executable) -> Iterator[Step]:
    """The recipe's steps in order, each made when it is reached (so a resume flag reflects the runs so far)."""
    soup_config = recipe["soup_config"]
    main, second = (Path(r) for r in _soup_runs(recipe, root))
    soup, dense = Path(recipe["soup_run"]), Path(recipe["dense_run"])
    yield _train_step(py, str(config), main, root)
    yield _train_step(py, recipe["second_run_config"], second, root, probe=main / "checkpoint_probe.pt")
    yield Step((py, "-m", "training.soup", "--config", soup_config, "--out", str(soup)), soup / "checkpoint_final.pt",
               ("source", "sha256"))
    yield Step((py, "-m", "training.dense_align", "--config", recipe["dense_config"], "--checkpoint",
                str(soup / "checkpoint_final.pt"), "--out", str(dense)), dense / "dense_projection.pt",
               ("dense", "parity", "projection_file_sha256"))
    # always runs: it replaces OUT, resumes or reuses the distillation and text-tuning runs, evaluates, compares
    # with this interpreter: a checkout without .venv (a git worktree) once failed here after 5 h of training
    yield Step(("bash", ASSEMBLY, str(soup), str(dense), str(out), recipe["distill_run"],
                str(recipe["distill_epoch"]), recipe["text_run"]), None, env=(("PYTHON", py),))


def _soup_runs(recipe: dict, root: Path) -> list[str]:
    """The soup config's two run folders: the config's own run, then second_run_config's."""
    from training.soup import load_config as load_soup_config

    runs = load_soup_config(root / recipe["soup_config"])["runs"]
    if len(runs) != 2:
        raise ValueError(f"{recipe['soup_config']}: the recipe's soup has two runs (this config's and "
                         f"second_run_config's), it lists {runs}")
    return runs


def _run_folders(recipe: dict, root: Path) -> list[str]:
    return [*_soup_runs(recipe, root), *(recipe[k] for k in ("soup_run", "dense_run", "distill_run", "text_run"))]


def compare_with_shipped(step: Step, root: Path) -> str | None:
    """A line saying whether the stage's file is the one the shipped bundle was built from (None: nothing to say)."""
    shipped = root / SHIPPED_MODEL_JSON
    if step.shipped_record is None or step.done_file is None or not shipped.is_file():
        return None
    want = json.loads(shipped.read_text())
    for key in step.shipped_record:
        want = want.get(key) if isinstance(want, dict) else None
    if not isinstance(want, str):
        return None
    from rsclip_geo.export import file_sha256

    got, where = file_sha256(root / step.done_file), "model.json " + ".".join(step.shipped_record)
    if got == want:
        return f"== same as the shipped bundle's: {step.done_file} (SHA-256 {got[:16]}, {where})"
    return (f"== differs from the shipped bundle's: {step.done_file} has SHA-256 {got[:16]}, the shipped {where} "
            f"{want[:16]}: the rebuilt bundle will not be byte-identical (expected on a CPU model other than the one "
            "it was built on: MODEL_CARD.md, 'A retrain on another machine'); going on")


def _written_since(path: Path, start: float) -> bool:
    return path.is_file() and path.stat().st_mtime >= start - 1  # - 1: file systems that keep whole seconds


def build(recipe: dict, config: Path, out: Path, *, overwrite: bool = False, dry_run: bool = False,
          root: Path = REPO_ROOT, py: str = sys.executable, check_data: bool = True,
          echo: Callable[[str], None] = print) -> int:
    """Run the recipe's steps still to do (``dry_run``: list them, run none); the first failing step's exit code.

    ``out`` is where the bundle goes; an existing folder there is replaced only with ``overwrite``. ``check_data``:
    first compare the fetched sets with their manifests (seconds), and refuse to start on a missing or changed
    file (a dry run only lists them).
    """
    out = Path(out)
    target = out if out.is_absolute() else root / out
    if target.exists() and not overwrite and not dry_run:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it with the rebuilt bundle")
    if target.resolve() == (root / "rsclip_geo" / "models" / "default").resolve():
        raise ValueError(f"{out} is the shipped bundle the rebuild is compared with; write it somewhere else")
    for run in _run_folders(recipe, root):  # the assembly replaces OUT whole: never a stage's run, nor above one
        here, there = target.resolve(), (root / run).resolve()
        if here == there or here in there.parents or there in here.parents:
            raise ValueError(f"{out} overlaps the recipe's run folder {run}; write the bundle somewhere else")
    if check_data:
        from training.data.manifests import check_sets, data_root

        problems = [c.describe() for c in check_sets(hash_files=True) if not c.ok]
        for line in problems:
            echo(f"== data: {line}")
        if problems and not dry_run:
            raise DatasetError(f"the fetched data under {data_root()} is not what training/manifests lists (above); "
                               "fetch it as training/DATA.md says, or point RSCLIP_DATA at it")
    for step in recipe_steps(recipe, config, out, root, py):
        if step.done(root):
            echo(f"== done: {step.line()}")
            if not dry_run and (said := compare_with_shipped(step, root)):
                echo(said)
            continue
        echo(f"== {time.strftime('%H:%M:%S', time.gmtime())} {step.line()}")
        if dry_run:
            continue
        started = time.time()
        code = subprocess.run(step.argv, cwd=root, env={**os.environ, **dict(step.env)} if step.env else None
                              ).returncode
        if code != 0 and step.argv[1:2] == (ASSEMBLY,) and _written_since(target / "model.json", started):
            # the assembly got as far as its comparison: a bundle was built, only not the shipped bytes
            echo(f"== built {out}, but not byte-identical to rsclip_geo/models/default (the files marked DIFFERENT "
                 "above): expected on a CPU model other than the one it was built on (MODEL_CARD.md, 'A retrain on "
                 "another machine')")
            return code
        if code != 0:
            echo(f"== failed (exit {code}): {step.line()}")
            return code
        if said := compare_with_shipped(step, root):
            echo(said)
    return 0
