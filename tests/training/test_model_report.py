"""The model report's AID scenes that no training stage reads (training/model_report.py)."""

import csv

from training.model_report import aid30, aid30_untrained


def _rsicd_csv(root, rows):
    path = root / "vtrsbs/metadata/RSICD/RSICD.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["", "filename", "split", "label", "sentence"])
        for i, (name, split) in enumerate(rows):
            w.writerow([i, name, split, "x", "['a caption']"])


def test_untrained_aid_scenes_are_the_excluded_ones_and_rsicd_val_picks_the_untouched(shared_data, tmp_path):
    from training.config import load_config
    from training.model_report import TRAINING_CONFIG
    from training.sources import excluded_keys

    aid = shared_data / "aid"
    spec = next(d for d in load_config(TRAINING_CONFIG)["datasets"] if d["kind"] == "aid")
    excluded = excluded_keys(spec, TRAINING_CONFIG.parents[2])
    whole, none = aid30_untrained(aid, tmp_path)
    assert none is None  # no RSICD split file under tmp_path
    assert len(whole.paths) == len(excluded) > 1000
    assert {p.name for p in whole.paths} == excluded
    assert len(whole.classes) == 30 and set(whole.labels.tolist()) == set(range(30))
    assert all(p.parent.name == whole.classes[y] for p, y in zip(whole.paths, whole.labels))
    val, _ = aid30(aid)  # the held-out split that picked alpha and epochs: none of its scenes are here
    assert not {p.name for p in whole.paths} & {p.name for p in val.paths}

    names = sorted(excluded)
    _rsicd_csv(tmp_path, [(n, "val" if i % 3 == 0 else "test") for i, n in enumerate(names)] + [("x_1.jpg", "val")])
    whole2, untouched = aid30_untrained(aid, tmp_path)
    assert [p.name for p in whole2.paths] == [p.name for p in whole.paths]
    assert {p.name for p in untouched.paths} == {n for i, n in enumerate(names) if i % 3 == 0}
    assert untouched.classes == whole.classes
    assert all(p.parent.name == untouched.classes[y] for p, y in zip(untouched.paths, untouched.labels))
