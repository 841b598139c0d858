"""scripts/train_default_model.sh: the one command from fetched data to the shipped bundle, checked by its dry run."""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "train_default_model.sh"

pytestmark = pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(),
                                reason="the script runs the repository's .venv")


def test_dry_run_lists_every_step_in_order_and_runs_none(tmp_path):
    # the script in a checkout of its own with no runs yet (what a user starts from), whatever this one holds
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "training" / "configs").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "scripts" / SCRIPT.name)
    shutil.copy2(REPO / "training/configs/soup_v26_long_replicate.toml", repo / "training" / "configs")
    (repo / ".venv").symlink_to(REPO / ".venv")
    out = tmp_path / "bundle"
    env = dict(os.environ, DRY_RUN="1")
    proc = subprocess.run(["bash", str(repo / "scripts" / SCRIPT.name), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert len(lines) == 5, proc.stdout
    main, long = tomllib.loads((REPO / "training/configs/soup_v26_long_replicate.toml").read_text())["runs"]
    soup = "runs/fresh_soup"
    expected = [f"-m training.train --config training/configs/default.toml --out {main}",
                f"-m training.train --config training/configs/long_schedule.toml --out {long}",
                f"-m training.soup --config training/configs/soup_v26_long_replicate.toml --out {soup}",
                f"-m training.dense_align --config training/configs/dense_align_tail.toml "
                f"--checkpoint {soup}/checkpoint_final.pt",
                f"scripts/reproduce_default_bundle.sh {soup} "]
    for line, part in zip(lines, expected):
        assert part in line, (part, line)
    # every step is still to run; the main run starts anew, the 6-epoch run from its probe checkpoint (the soup
    # needs one start); the dry run made nothing
    assert not any("== done:" in line for line in lines)
    assert "--probe-from" not in lines[0] and f"--probe-from {main}/checkpoint_probe.pt" in lines[1]
    # the distillation epoch left empty (the shipped one), then the text-tuning run
    assert lines[-1].endswith(f"{out} runs/fresh_soup_distill  runs/text_tune_v27")
    assert not out.exists() and not (repo / "runs").exists()
    for config in ("default.toml", "long_schedule.toml", "dense_align_tail.toml", "soup_v26_long_replicate.toml",
                   "text_tune.toml"):
        assert (REPO / "training" / "configs" / config).is_file()
