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
