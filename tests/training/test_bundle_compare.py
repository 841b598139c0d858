"""training.bundle_compare: the rebuild's last word, so it must tell a provenance field from a different model."""
import json

import pytest

from training.bundle_compare import compare_bundles, json_differences, main


def _bundle(folder, model_json, onnx=b"\x08\x07graph"):
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(model_json, indent=2))
    (folder / "image_encoder.onnx").write_bytes(onnx)
    (folder / "MODEL_CARD.md").write_text(f"written by hand in {folder.name}\n")
    return folder


DOC = {"name": "default", "templates": ["a {}", "an image of {}"],
       "dense": {"threshold": 0.21, "parity": {"projection_file_sha256": "5e48", "cosine_min": 0.99998}}}


def test_json_differences_name_the_paths_that_differ():
    other = json.loads(json.dumps(DOC))
    other["dense"]["parity"]["projection_file_sha256"] = "2a3d"
    other["templates"][1] = "a photo of {}"
    other["dense"]["new"] = 1
    assert json_differences(DOC, other) == ["templates[1]", "dense.parity.projection_file_sha256",
                                            "dense.new (only in the rebuilt file)"]
    assert json_differences(DOC, json.loads(json.dumps(DOC))) == []
    assert json_differences({"x": 1}, {"x": 1.0}) == ["x"]  # equal in Python, not the same bytes
    assert json_differences({"t": [1, 2]}, {"t": [1, 2, 3]}) == ["t"]


def test_same_bundles_pass_and_the_card_is_not_compared(tmp_path, capsys):
    a, b = _bundle(tmp_path / "shipped", DOC), _bundle(tmp_path / "rebuilt", DOC)
    rows = compare_bundles(a, b)
    assert [(s, n) for s, n, _ in rows] == [("same", "image_encoder.onnx"), ("same", "model.json")]
    assert main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.count("same") == 2


def test_a_differing_field_missing_and_extra_files_fail_and_say_which(tmp_path, capsys):
    other = json.loads(json.dumps(DOC))
    other["dense"]["parity"]["projection_file_sha256"] = "2a3d"
    a, b = _bundle(tmp_path / "shipped", DOC), _bundle(tmp_path / "rebuilt", other, onnx=b"\x08\x07other")
    (a / "tokenizer.json").write_text("{}")
    (b / "stray.bin").write_bytes(b"1")
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["DIFFERENT image_encoder.onnx",
                   "DIFFERENT model.json  in dense.parity.projection_file_sha256",
                   "MISSING   tokenizer.json  not in the rebuilt bundle",
                   "EXTRA     stray.bin  not in the shipped bundle"]


def test_same_values_in_other_bytes_and_broken_json_are_told_apart(tmp_path):
    a = _bundle(tmp_path / "shipped", DOC)
    b = _bundle(tmp_path / "rebuilt", DOC)
    (b / "model.json").write_text(json.dumps(DOC))  # no indent: same values, other bytes
    assert ("DIFFERENT", "model.json", "(same values, different bytes: key order or number formatting)") in \
        compare_bundles(a, b)
    (b / "model.json").write_text('{"name": ')
    assert [d for s, n, d in compare_bundles(a, b) if n == "model.json"][0].startswith("(not comparable as JSON")


def test_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    a = _bundle(tmp_path / "shipped", DOC)
    with pytest.raises(FileNotFoundError, match="nope: no such bundle folder"):
        compare_bundles(a, tmp_path / "nope")
    assert main([str(a), str(tmp_path / "nope")]) == 2
    assert "no such bundle folder" in capsys.readouterr().err
