"""Model soup: weighted averages of real checkpoints, refused when the runs did not share a start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rsclip_geo.export import file_sha256  # noqa: E402
from training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from training.config import ConfigError  # noqa: E402
from training.soup import load_config, main, make_soup  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _net(seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.LazyLinear(2))


def _run(folder: Path, final_seed: int, probe_seed: int = 0, steps: int = 0, config: dict | None = None) -> Path:
    """A main-run folder: model_config.json, checkpoint_probe.pt and checkpoint_final.pt of a small real net."""
    folder.mkdir(parents=True)
    (folder / "model_config.json").write_text(json.dumps(config or {"embed_dim": 2}), encoding="utf-8")
    for name, seed in (("checkpoint_probe.pt", probe_seed), ("checkpoint_final.pt", final_seed)):
        net = _net(seed)
        net(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
        if name == "checkpoint_final.pt":
            net[1].num_batches_tracked += steps
        save_checkpoint(folder / name, 4, "Tiny", net)
    return folder


def _cfg(*runs, weights=None):
    return {"runs": [str(r) for r in runs], "weights": weights or [1 / len(runs)] * len(runs),
            "checkpoint": "checkpoint_final.pt"}


def test_soup_is_the_weighted_average_of_the_runs_and_records_them(tmp_path):
    a, b = _run(tmp_path / "a", 1, steps=3), _run(tmp_path / "b", 2, steps=7)
    out = make_soup(_cfg(a, b, weights=[0.25, 0.75]), tmp_path / "soup")
    sa, sb = (load_checkpoint(r / "checkpoint_final.pt")["state_dict"] for r in (a, b))
    soup = load_checkpoint(out / "checkpoint_final.pt")
    assert soup["name"] == "Tiny"
    for k, v in soup["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * sa[k] + 0.75 * sb[k])
            assert not torch.equal(v, sa[k]) or torch.equal(sa[k], sb[k])
        else:
            assert torch.equal(v, sa[k])  # the first run's batch-norm counter
    _net(0).load_state_dict(soup["state_dict"], strict=True)
    record = json.loads((out / "soup.json").read_text(encoding="utf-8"))
    assert record["weights"] == [0.25, 0.75] and record["runs"] == [str(a), str(b)]
    assert record["checkpoint_sha256"] == [file_sha256(r / "checkpoint_final.pt") for r in (a, b)]
    assert (out / "model_config.json").read_bytes() == (a / "model_config.json").read_bytes()


def test_soup_of_a_run_with_itself_is_that_run_exactly(tmp_path):
    a = _run(tmp_path / "a", 1)
    out = make_soup(_cfg(a, a), tmp_path / "soup")
    sa = load_checkpoint(a / "checkpoint_final.pt")["state_dict"]
    soup = load_checkpoint(out / "checkpoint_final.pt")["state_dict"]
    assert all(torch.equal(soup[k], sa[k]) for k in sa)


@pytest.mark.parametrize("differ, message", [
    ({"probe_seed": 9}, "checkpoint_probe.pt differs"),
    ({"config": {"embed_dim": 3}}, "model_config.json differs"),
])
def test_runs_without_a_shared_start_are_refused(tmp_path, differ, message):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2, **differ)
    with pytest.raises(ValueError, match=message):
        make_soup(_cfg(a, b), tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


def test_runs_of_other_models_are_refused_by_key(tmp_path):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2)
    state = load_checkpoint(b / "checkpoint_final.pt")
    state["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(state, b / "checkpoint_final.pt")
    with pytest.raises(ValueError, match=r"keys differ.*extra\.weight"):
        make_soup(_cfg(a, b), tmp_path / "soup")


def test_existing_output_needs_overwrite_and_a_run_is_never_the_output(tmp_path):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2)
    out = tmp_path / "soup"
    out.mkdir()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_soup(_cfg(a, b), out)
    assert (out / "mine.txt").read_text(encoding="utf-8") == "keep"
    make_soup(_cfg(a, b), out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_final.pt", "model_config.json", "soup.json"]
    with pytest.raises(ValueError, match="one of the soup's own runs"):
        make_soup(_cfg(a, b), a, overwrite=True)
    assert (a / "checkpoint_probe.pt").is_file()


def test_a_failed_write_leaves_no_output_and_no_partial_folder(tmp_path, monkeypatch):
    a, b = _run(tmp_path / "a", 1), _run(tmp_path / "b", 2)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("training.soup.torch.save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        make_soup(_cfg(a, b), tmp_path / "soup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize("body, message", [
    ('runs = ["a"]\nweights = [1.0]\n', "at least two runs"),
    ('runs = ["a", "b"]\nweights = [0.5]\n', "one weight per run"),
    ('runs = ["a", "b"]\nweights = [0.6, 0.6]\n', "summing to 1"),
    ('runs = ["a", "b"]\nweights = [1.5, -0.5]\n', "positive"),
    ('runs = ["a", "b"]\nweights = [0.5, 0.5]\nweight = 1\n', "weight"),
])
def test_bad_configs_are_refused_naming_the_file(tmp_path, body, message):
    path = tmp_path / "soup.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_the_committed_soup_configs_are_valid():
    for name in ("soup_v26_long", "soup_v26_long_replicate"):
        cfg = load_config(REPO / f"training/configs/{name}.toml")
        assert cfg["weights"] == [0.5, 0.5] and len(cfg["runs"]) == 2
    cfg = load_config(REPO / "training/configs/soup3.toml")
    assert len(cfg["runs"]) == 3 and max(cfg["weights"]) - min(cfg["weights"]) < 1e-9  # uniform


def test_cli_reports_a_missing_run_without_a_traceback(tmp_path, capsys):
    a = _run(tmp_path / "a", 1)
    config = tmp_path / "soup.toml"
    config.write_text(f'runs = ["{a}", "{tmp_path / "nope"}"]\nweights = [0.5, 0.5]\n', encoding="utf-8")
    assert main(["--config", str(config), "--out", str(tmp_path / "soup")]) == 2
    err = capsys.readouterr().err
    assert "nope/model_config.json: missing" in err
    assert not (tmp_path / "soup").exists()
