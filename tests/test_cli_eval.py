"""`rsclip-geo eval ...` end to end with the tiny real bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rsclip_geo.cli import main
from tests.test_eval_zero_shot import make_colour_dataset
from tests.utils.rasters import BLUE, GREEN, RED


@pytest.fixture
def run(tiny_bundle):
    def _run(*args):
        result = CliRunner().invoke(main, ["eval", *map(str, args), "--model", str(tiny_bundle), "--device", "cpu",
                                           "-q"])
        return result
    return _run


@pytest.fixture
def colours(tmp_path):
    return make_colour_dataset(tmp_path / "colours")


def test_zero_shot_json(run, colours):
    r = run("zero-shot", colours, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert {"top1", "top5", "n", "per_class", "model", "provider"} <= set(data)
    assert data["top1"] == 1.0 and data["n"] == 9 and data["model"] == "tiny-rgb"
    assert data["per_class"] == {"blue": 1.0, "green": 1.0, "red": 1.0}


def test_zero_shot_table_and_swapped_classnames(run, colours, tmp_path):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"red": "green", "green": "red", "blue": "blue"}))
    r = run("zero-shot", colours, "--classnames", names)
    assert r.exit_code == 0, r.output
    assert "top-1 33.33%" in r.stdout and "top-3 100.00%" in r.stdout
    rows = {line.split()[0]: line.split()[-1] for line in r.stdout.splitlines()[4:] if line.strip()}
    assert rows == {"blue": "100.00%", "green": "0.00%", "red": "0.00%"}


def test_zero_shot_limit_per_class(run, tmp_path):
    root = make_colour_dataset(tmp_path / "many", per_format=2)
    r = run("zero-shot", root, "--limit-per-class", "2", "--seed", "3", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 6


@pytest.mark.parametrize("setup, message", [
    (lambda root: root / "missing", "missing: dataset folder does not exist"),
    (lambda root: (root / "red" / "bad.png").write_bytes(b"not a png") and root, "bad.png: cannot read image"),
])
def test_zero_shot_errors_name_the_file(run, colours, setup, message):
    target = setup(colours)
    r = run("zero-shot", target)
    assert r.exit_code == 1
    assert message in r.output and "Traceback" not in r.output


def test_zero_shot_classnames_missing_folder(run, colours, tmp_path):
    names = tmp_path / "partial.json"
    names.write_text(json.dumps({"red": "red"}))
    r = run("zero-shot", colours, "--classnames", names)
    assert r.exit_code == 1
    assert "partial.json" in r.output and "'blue'" in r.output and "'green'" in r.output


def _solid_images(folder, named):
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in named.items():
        Image.fromarray(np.full((10, 10, 3), colour, np.uint8)).save(folder / name)


def test_retrieval_csv_and_karpathy(run, tmp_path):
    _solid_images(tmp_path / "imgs", {"r.png": RED, "g.png": GREEN, "b.png": BLUE})
    caps = tmp_path / "caps.csv"
    caps.write_text("path,caption\nr.png,blue\nr.png,red\ng.png,green\nb.png,red green\n")
    r = run("retrieval", caps, "--images-root", tmp_path / "imgs", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    # same set as the library test: red hit via its 2nd caption, blue image misses at 1
    assert m["i2t_R@1"] == pytest.approx(2 / 3) and m["t2i_R@1"] == pytest.approx(0.5)
    assert {"i2t_R@5", "i2t_R@10", "t2i_R@10", "mean_recall"} <= set(m)
    kj = tmp_path / "imgs" / "dataset.json"
    kj.write_text(json.dumps({"images": [
        {"filename": "r.png", "split": "test", "sentences": [{"raw": "red"}]},
        {"filename": "g.png", "split": "test", "sentences": [{"raw": "green"}]},
        {"filename": "b.png", "split": "train", "sentences": [{"raw": "green"}]}]}))
    r = run("retrieval", kj)
    assert r.exit_code == 0, r.output
    assert "2 images, 2 captions" in r.stdout and "image->text" in r.stdout


def test_probe_json_and_option_conflict(run, tmp_path):
    root = make_colour_dataset(tmp_path / "c", per_format=2)
    r = run("probe", root, "--split", "0.5", "--shots", "1,2", "--k", "3", "--draws", "2", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["linear_probe"]["accuracy"] == 1.0 and d["knn"]["accuracy"] == 1.0 and d["knn"]["k"] == 3
    assert [f["shots"] for f in d["few_shot"]] == [1, 2]
    r = run("probe", root, "--train-dir", root, "--split", "0.5")
    assert r.exit_code == 2 and "not both" in r.output
    r = run("probe", root, "--shots", "1,x")
    assert r.exit_code == 2 and "--shots" in r.output


def test_count_command(run, tmp_path):
    _solid_images(tmp_path, {"r.png": RED, "g.png": GREEN, "b.png": BLUE})
    (tmp_path / "counts.csv").write_text("r.png,thing,1\ng.png,thing,3\nb.png,thing,3\nb.png,thing,7\n")
    args = ["count", tmp_path / "counts.csv", "--max", "3", "--numerals", "red,green,blue", "--template",
            "{n} {objects}"]
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    # predictions 1, 2, 3, 3 (the colour spells the count) against truths 1, 3, 3, 7
    assert d["exact"] == 0.5 and d["within1"] == 0.75 and d["mae"] == pytest.approx(1.25)
    assert d["baseline_count"] == 3 and d["baseline_mae"] == pytest.approx(1.5)
    assert [p["runner_up"] for p in d["predictions"]] == [2, 3, 2, 2]
    r = run(*args)
    assert r.exit_code == 0 and "median baseline MAE" in r.stdout
    r = run("count", tmp_path / "nothing.csv")
    assert r.exit_code == 1 and "nothing.csv" in r.output
