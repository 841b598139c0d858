"""Scene overlap between AID and RSICD: which training images must go so that no held-out scene is trained on.

Why: RSICD reuses AID's file names (class_N.jpg) for the same Google Earth scenes, re-cropped to 224 px
(10,000 of its 10,921 images; checked by eye and by pixel correlation). A scene held out in one set (AID's
fixed 20 % val split, RSICD's val/test split) must not be trained on through the other set, or both
zero-shot figures leak. Writes two exclusion lists that the training config names:

    python -m training.data.overlap --rsicd-csv $RSCLIP_DATA/vtrsbs/metadata/RSICD/RSICD.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

SPLITS = Path(__file__).resolve().parents[1] / "splits"
HEADER = ("# {what}\n# Rule: RSICD reuses AID's file names (class_N.jpg) for the same scenes; a scene held out in one set\n"
          "# is not trained on through the other. Made by `python -m training.data.overlap`.\n")


def exclusions(rsicd_rows: list[dict], aid_split: dict) -> tuple[list[str], list[str]]:
    """(AID train names that are RSICD val/test scenes, RSICD train names that are AID val scenes)."""
    aid_val = {f for files in aid_split["val"].values() for f in files}
    aid_train = {f for files in aid_split["train"].values() for f in files}
    rs_eval = {r["filename"] for r in rsicd_rows if r["split"] in ("val", "test")}
    rs_train = {r["filename"] for r in rsicd_rows if r["split"] == "train"}
    return sorted(aid_train & rs_eval), sorted(rs_train & aid_val)


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsicd-csv", type=Path, required=True)
    ap.add_argument("--aid-split", type=Path, default=SPLITS / "aid30_split.json")
    args = ap.parse_args()
    with args.rsicd_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    aid_ex, rs_ex = exclusions(rows, json.loads(args.aid_split.read_text(encoding="utf-8")))
    for name, what, keys in (
            ("aid30_train_exclude.txt", "AID training images whose scene is an RSICD val/test image", aid_ex),
            ("rsicd_train_exclude.txt", "RSICD training images whose scene is an AID held-out (val) image", rs_ex)):
        (SPLITS / name).write_text(HEADER.format(what=what) + "".join(k + "\n" for k in keys), encoding="utf-8")
        print(f"{name}: {len(keys)} images")


if __name__ == "__main__":
    _main()
