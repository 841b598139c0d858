"""Labels, labels files and class-name humanising."""

import pytest

from rsclip_geo.errors import LabelError
from rsclip_geo.runtime.prompts import Label, humanize_class_name, parse_labels, read_labels_file


@pytest.mark.parametrize("raw, expected", [
    ("DenseResidential", "dense residential"), ("dense_residential", "dense residential"),
    ("BareLand", "bare land"), ("baseballField", "baseball field"), ("storage-tank", "storage tank"),
    ("RiverLake", "river lake"), ("airport", "airport"),
])
def test_humanize(raw, expected):
    assert humanize_class_name(raw) == expected


def test_parse_labels_string_and_list():
    assert [l.name for l in parse_labels(" water, forest ,farmland")] == ["water", "forest", "farmland"]
    assert [l.name for l in parse_labels(["a", Label("b", ("x",))])] == ["a", "b"]


@pytest.mark.parametrize("bad", ["", " , ,", []])
def test_empty_labels(bad):
    with pytest.raises(LabelError, match="no labels"):
        parse_labels(bad)


def test_duplicate_labels_case_insensitive():
    with pytest.raises(LabelError, match="duplicate label 'Water'"):
        parse_labels("water,forest,Water")


def test_labels_file(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# comment\nwater: a lake | a river  \n\nforest\n  farmland # trailing comment\n")
    labels = read_labels_file(f)
    assert labels == [Label("water", ("a lake", "a river")), Label("forest"), Label("farmland")]
    assert labels[0].texts(["{}"]) == ["a lake", "a river"]
    assert labels[1].texts(["x {} y"]) == ["x forest y"]


def test_labels_file_errors(tmp_path):
    with pytest.raises(LabelError, match="does not exist"):
        read_labels_file(tmp_path / "nope.txt")
    f = tmp_path / "bad.txt"
    f.write_text("water:\n")
    with pytest.raises(LabelError, match=r"bad.txt:1: label 'water' has ':' but no prompts"):
        read_labels_file(f)
    f.write_text("# only comments\n\n")
    with pytest.raises(LabelError, match="no labels"):
        read_labels_file(f)
    f.write_text("a\nb\nA\n")
    with pytest.raises(LabelError, match="duplicate"):
        read_labels_file(f)


def test_json_files_typed_by_a_person_are_refused_clearly(tmp_path):
    """The audit's label map and the evaluator's class names read through one reader: every bad file is a
    LabelError that names it, never a traceback or a file read whole into memory."""
    from rsclip_geo.evaluation.datasets import read_classnames
    from rsclip_geo.tasks.audit.labels import read_label_map

    readers = (lambda p: read_label_map(p), lambda p: read_classnames(p, ["A", "B"]))
    cases = {"missing.json": None, "broken.json": b'{"21": "water"', "list.json": b'["water"]',
             "empty.json": b"{}", "binary.json": b'{"21"\0: 1}', "huge.json": b" " * (2 << 20) + b"{}"}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        for read in readers:
            with pytest.raises(LabelError, match=name):
                read(path)
    good = tmp_path / "good.json"
    good.write_text('\ufeff{"A": "dense forest", "B": ["a lake", "open water"]}', encoding="utf-8")
    assert read_label_map(good)["A"].name == "dense forest"
    assert read_label_map(good)["B"].prompts == ("a lake", "open water")
    with pytest.raises(LabelError, match="folder 'B' must be a non-empty string"):
        read_classnames(good, ["A", "B"])
