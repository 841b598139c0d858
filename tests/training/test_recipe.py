"""training/recipe.py: `training.train --config default.toml` as the one command from fetched data to the bundle."""

import json
import os
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

from training.config import ConfigError, load_config
from training.recipe import build, recipe_steps
from training.train import main as train_main

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"


@pytest.fixture
def checkout(tmp_path):
    """A checkout of its own with the recipe's configs and no runs yet (what a user starts from)."""
    root = tmp_path / "repo"
    (root / "training" / "configs").mkdir(parents=True)
    for name in ("default.toml", "long_schedule.toml", "soup_v26_long_replicate.toml", "dense_align_tail.toml"):
        shutil.copy2(CONFIGS / name, root / "training" / "configs" / name)
    return root


def _recipe():
    return load_config(CONFIGS / "default.toml")["recipe"]


def _runs():
    return tomllib.loads((CONFIGS / "soup_v26_long_replicate.toml").read_text())["runs"]


def _lines(recipe, root, out):
    return [s.line() for s in recipe_steps(recipe, Path("training/configs/default.toml"), out, root, py="PY")]


def test_fresh_checkout_runs_every_stage_in_order(checkout, tmp_path):
    recipe = _recipe()
    main, second = _runs()
    out = tmp_path / "bundle"
    lines = _lines(recipe, checkout, out)
    assert lines == [
        f"PY -m training.train --config training/configs/default.toml --out {main} --run-only",
        f"PY -m training.train --config {recipe['second_run_config']} --out {second} --run-only "
        f"--probe-from {main}/checkpoint_probe.pt",
        f"PY -m training.soup --config {recipe['soup_config']} --out {recipe['soup_run']}",
        f"PY -m training.dense_align --config {recipe['dense_config']} --checkpoint "
        f"{recipe['soup_run']}/checkpoint_final.pt --out {recipe['dense_run']}",
        f"PYTHON=PY bash scripts/reproduce_default_bundle.sh {recipe['soup_run']} {recipe['dense_run']} {out} "
        f"{recipe['distill_run']} {recipe['distill_epoch']} {recipe['text_run']}",
    ]
    # the dry run lists them all as still to run and makes nothing
    said = []
    assert build(recipe, Path("training/configs/default.toml"), out, dry_run=True, root=checkout, check_data=False,
                 echo=said.append) == 0
    assert len(said) == 5 and not any(s.startswith("== done") for s in said)
    assert not out.exists() and not (checkout / "runs").exists()


def test_each_step_resumes_or_is_skipped_from_what_is_on_disk(checkout, tmp_path):
    recipe = _recipe()
    runs = _runs()
    main, second = (checkout / r for r in runs)
    main.mkdir(parents=True)
    (main / "checkpoint_probe.pt").write_bytes(b"")
    lines = _lines(recipe, checkout, tmp_path / "b")
    assert lines[0].endswith(f"--probe-from {runs[0]}/checkpoint_probe.pt")  # its own probe stage is kept
    (main / "checkpoint_last.pt").write_bytes(b"")
    assert _lines(recipe, checkout, tmp_path / "b")[0].endswith(f"--resume {runs[0]}/checkpoint_last.pt")
    second.mkdir(parents=True)
    (second / "checkpoint_last.pt").write_bytes(b"")
    assert _lines(recipe, checkout, tmp_path / "b")[1].endswith(f"--resume {runs[1]}/checkpoint_last.pt")
    (main / "checkpoint_final.pt").write_bytes(b"")
    (checkout / recipe["soup_run"]).mkdir(parents=True)
    (checkout / recipe["soup_run"] / "checkpoint_final.pt").write_bytes(b"")
    said = []
    build(recipe, Path("training/configs/default.toml"), tmp_path / "b", dry_run=True, root=checkout, check_data=False,
          echo=said.append)
    done = [s.startswith("== done: ") for s in said]
    assert done == [True, False, True, False, False]  # the assembly always runs


def test_a_failing_stage_stops_the_recipe_with_its_exit_code(checkout, tmp_path):
    # an interpreter that fails with 7 (as a run that ran out of disk would fail): nothing after it may run
    py = tmp_path / "failing_python"
    py.write_text("#!/bin/sh\nexit 7\n")
    py.chmod(0o755)
    said = []
    code = build(_recipe(), Path("training/configs/default.toml"), tmp_path / "b", root=checkout, check_data=False, py=str(py),
                 echo=said.append)
    assert code == 7
    assert len(said) == 2 and said[1].startswith("== failed (exit 7): ") and "training.train" in said[1]
    assert not (tmp_path / "b").exists()


def test_a_bundle_that_differs_from_the_shipped_one_is_reported_as_built(checkout, tmp_path):
    # every training stage done; the assembly (a stand-in: the real one needs the runs) builds OUT, then finds a
    # file that differs and exits 1, as on a CPU model other than the one the bundle was built on
    recipe = _recipe()
    for done in [f"{r}/checkpoint_final.pt" for r in (*_runs(), recipe["soup_run"])] + \
            [f"{recipe['dense_run']}/dense_projection.pt"]:
        (checkout / done).parent.mkdir(parents=True, exist_ok=True)
        (checkout / done).write_bytes(b"")
    (checkout / "scripts").mkdir()
    (checkout / "scripts" / "reproduce_default_bundle.sh").write_text(
        'mkdir -p "$3" && echo {} > "$3/model.json" && echo "DIFFERENT image_encoder.onnx" && exit 1\n')
    out = tmp_path / "b"
    said = []
    assert build(recipe, Path("training/configs/default.toml"), out, root=checkout, check_data=False, echo=said.append) == 1
    assert said[-1].startswith(f"== built {out}, but not byte-identical") and (out / "model.json").is_file()
    # the same exit before this run wrote a bundle (an older one left at OUT included) is a failure of the stage
    (checkout / "scripts" / "reproduce_default_bundle.sh").write_text("exit 1\n")
    os.utime(out / "model.json", (1e9, 1e9))
    said = []
    assert build(recipe, Path("training/configs/default.toml"), out, overwrite=True, root=checkout, check_data=False,
                 echo=said.append) == 1
    assert said[-1].startswith(f"== failed (exit 1): PYTHON={sys.executable} bash scripts/reproduce_default_bundle.sh")


def test_missing_or_changed_data_stops_the_recipe_before_its_first_stage(checkout, tmp_path, monkeypatch):
    from rsclip_geo.errors import DatasetError
    from training.data.manifests import MANIFESTS

    monkeypatch.setenv("RSCLIP_DATA", str(tmp_path / "no_data"))
    py = tmp_path / "failing_python"  # had a stage started, the recipe would return its 7 instead of raising
    py.write_text("#!/bin/sh\nexit 7\n")
    py.chmod(0o755)
    said = []
    with pytest.raises(DatasetError, match="no_data.*training/DATA.md"):
        build(_recipe(), Path("training/configs/default.toml"), tmp_path / "b", root=checkout, py=str(py),
              echo=said.append)
    assert len(said) == len(MANIFESTS) and all(s.startswith("== data: PROBLEM") for s in said)
    # a dry run names the same sets, then lists the stages
    said = []
    assert build(_recipe(), Path("training/configs/default.toml"), tmp_path / "b", root=checkout, dry_run=True,
                 echo=said.append) == 0
    assert len(said) == len(MANIFESTS) + 5 and said[-1].split(" ", 3)[3].startswith("bash ")


def test_an_existing_bundle_is_replaced_only_with_overwrite(checkout, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="--overwrite"):
        build(_recipe(), Path("training/configs/default.toml"), out, root=checkout, check_data=False, echo=lambda s: None)
    with pytest.raises(ValueError, match="shipped bundle"):
        build(_recipe(), Path("training/configs/default.toml"), Path("rsclip_geo/models/default"), overwrite=True,
              root=REPO, check_data=False, echo=lambda s: None)
    for inside in (_runs()[0], "runs", f"{_recipe()['distill_run']}/bundle"):  # a run, above one, inside one
        with pytest.raises(ValueError, match="overlaps the recipe's run folder"):
            build(_recipe(), Path("training/configs/default.toml"), Path(inside), overwrite=True, root=checkout, check_data=False,
                  echo=lambda s: None)
    assert (out / "keep.txt").read_text() == "a user's file"


def test_the_committed_recipe_names_files_that_exist_and_the_shipped_epoch():
    recipe = _recipe()
    for key in ("second_run_config", "soup_config", "dense_config"):
        assert (REPO / recipe[key]).is_file(), key
    shipped = json.loads((REPO / "rsclip_geo/models/default/model.json").read_text())
    assert recipe["distill_epoch"] == shipped["source"]["rotation_distill"]["epoch"]
    assert (REPO / "scripts" / "reproduce_default_bundle.sh").is_file()


def test_a_variant_does_not_inherit_the_recipe_and_a_partial_one_is_refused(tmp_path):
    variant = load_config(CONFIGS / "long_schedule.toml")  # base = "default.toml"
    assert not any(variant["recipe"].values())
    (tmp_path / "base.toml").write_text((CONFIGS / "default.toml").read_text())
    (tmp_path / "half.toml").write_text('base = "base.toml"\n[recipe]\nsoup_run = "runs/x"\n')
    with pytest.raises(ConfigError, match="missing: second_run_config"):
        load_config(tmp_path / "half.toml")


def test_train_cli_keeps_run_flags_and_recipe_flags_apart(capsys):
    with pytest.raises(SystemExit):
        train_main(["--config", str(CONFIGS / "long_schedule.toml"), "--dry-run"])
    assert "[recipe]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--config", str(CONFIGS / "default.toml"), "--resume", "x.pt"])
    assert "--run-only" in capsys.readouterr().err
    # the dry run of the real recipe in this checkout: the assembly is always listed last
    assert train_main(["--config", str(CONFIGS / "default.toml"), "--dry-run", "--out", "/nonexistent/b"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split(" ", 3)[3].startswith(
        "bash scripts/reproduce_default_bundle.sh")


def test_the_soup_and_dense_head_are_checked_against_the_shipped_record_before_the_assembly(checkout, tmp_path):
    """A rebuild that cannot end on the shipped bytes says so after the soup, not hours later; it goes on anyway."""
    import hashlib

    recipe = _recipe()
    soup, dense = checkout / recipe["soup_run"], checkout / recipe["dense_run"]
    for r in _runs():
        (checkout / r).mkdir(parents=True)
        (checkout / r / "checkpoint_final.pt").write_bytes(b"")
    soup.mkdir(parents=True)
    (soup / "checkpoint_final.pt").write_bytes(b"the soup")
    dense.mkdir(parents=True)
    (dense / "dense_projection.pt").write_bytes(b"another head")
    shipped = checkout / "rsclip_geo" / "models" / "default" / "model.json"
    shipped.parent.mkdir(parents=True)
    shipped.write_text(json.dumps({"source": {"sha256": hashlib.sha256(b"the soup").hexdigest()},
                                   "dense": {"parity": {"projection_file_sha256": hashlib.sha256(b"head").hexdigest()}}}))
    (checkout / "scripts").mkdir()
    (checkout / "scripts" / "reproduce_default_bundle.sh").write_text(
        'mkdir -p "$3" && echo {} > "$3/model.json" && printf %s "$PYTHON" > "$3/python"\n')
    said = []
    assert build(recipe, Path("training/configs/default.toml"), tmp_path / "b", root=checkout, check_data=False,
                 echo=said.append) == 0
    # the assembly runs with the recipe's interpreter: a checkout without .venv once failed there after 5 h
    assert (tmp_path / "b" / "python").read_text() == sys.executable
    checks = [s for s in said if not s.startswith("== done") and "reproduce_default_bundle" not in s]
    assert checks[0].startswith(f"== same as the shipped bundle's: {recipe['soup_run']}/checkpoint_final.pt")
    assert checks[1].startswith(f"== differs from the shipped bundle's: {recipe['dense_run']}/dense_projection.pt")
    assert "projection_file_sha256" in checks[1] and checks[1].endswith("going on") and len(checks) == 2
    # a head made by this run (not found done) is checked too, right after its stage
    (dense / "dense_projection.pt").unlink()
    py = tmp_path / "dense_python"  # argv: -m training.dense_align --config C --checkpoint K --out DIR
    py.write_text('#!/bin/sh\nmkdir -p "$8" && printf head > "$8/dense_projection.pt"\n')
    py.chmod(0o755)
    said = []
    assert build(recipe, Path("training/configs/default.toml"), tmp_path / "b2", root=checkout, check_data=False,
                 py=str(py), echo=said.append) == 0
    at = next(i for i, s in enumerate(said) if "training.dense_align" in s)
    assert said[at + 1].startswith(f"== same as the shipped bundle's: {recipe['dense_run']}/dense_projection.pt")
    # a dry run hashes nothing, and a bundle without the record says nothing
    said = []
    build(recipe, Path("training/configs/default.toml"), tmp_path / "c", dry_run=True, root=checkout, check_data=False,
          echo=said.append)
    assert not any("shipped bundle's" in s for s in said)
    shipped.write_text("{}")
    said = []
    assert build(recipe, Path("training/configs/default.toml"), tmp_path / "d", root=checkout, check_data=False,
                 echo=said.append) == 0
    assert not any("shipped bundle's" in s for s in said)
