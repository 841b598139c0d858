"""training/data/manifests.py: the fetched sets checked against training/manifests before a retrain."""

import hashlib

import pytest

from training.data.manifests import MANIFEST_DIR, MANIFESTS, check_sets, main


def test_every_committed_manifest_has_its_folder():
    assert set(MANIFESTS) == {p.name for p in MANIFEST_DIR.glob("*.sha256")}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fetched(tmp_path):
    """A one-set data root and its manifest: a.jpg as listed, b/c.jpg listed with other bytes, d.jpg absent."""
    manifests, root = tmp_path / "manifests", tmp_path / "data"
    manifests.mkdir()
    (root / "set" / "b").mkdir(parents=True)
    (root / "set" / "a.jpg").write_bytes(b"aaa")
    (root / "set" / "b" / "c.jpg").write_bytes(b"changed")
    (manifests / "set.sha256").write_text(f"{_sha(b'aaa')}  a.jpg\n{_sha(b'ccc')} *b/c.jpg\n\n{_sha(b'ddd')}  d.jpg\n")
    return root, manifests


def test_presence_and_bytes(fetched):
    root, manifests = fetched
    [quick] = check_sets(root, manifest_dir=manifests, manifests={"set.sha256": "set"})
    assert (quick.listed, quick.missing, quick.changed, quick.ok) == (3, ["d.jpg"], [], False)
    [full] = check_sets(root, hash_files=True, manifest_dir=manifests, manifests={"set.sha256": "set"})
    assert (full.missing, full.changed) == (["d.jpg"], ["b/c.jpg"])
    assert "1 of 3 files missing (first: d.jpg)" in full.describe() and "1 with other bytes" in full.describe()
    (root / "set" / "d.jpg").write_bytes(b"ddd")
    (root / "set" / "b" / "c.jpg").write_bytes(b"ccc")
    [good] = check_sets(root, hash_files=True, manifest_dir=manifests, manifests={"set.sha256": "set"})
    assert good.ok and good.describe().startswith("ok ")


def test_a_malformed_manifest_line_is_named(fetched):
    root, manifests = fetched
    (manifests / "set.sha256").write_text("not a hash line\n")
    with pytest.raises(ValueError, match=r"set\.sha256:1: not a sha256sum line"):
        check_sets(root, manifest_dir=manifests, manifests={"set.sha256": "set"})


def test_cli_exits_1_and_names_every_set_when_nothing_is_fetched(tmp_path, capsys):
    assert main(["--data", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(MANIFESTS) and all(line.startswith("PROBLEM") for line in lines)
