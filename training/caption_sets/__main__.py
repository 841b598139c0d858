"""`python -m training.caption_sets NAME --out DIR`: build one caption set (see the package docstring)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .ceilings import chance_recall, recall_ceilings
from .writer import prepare_out, write_info, write_karpathy

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SETS = ("rs-b2c", "aid-heldout")


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def build_set(name: str, out: Path, data_dir: Path = DATA_DIR, seed: int = 0, chip_size: int | None = None,
              subset: list[str] | None = None) -> dict:
    """Build set `name` into the empty folder `out`; returns the info written to out/info.json."""
    out = prepare_out(out, data_dir)
    start = time.perf_counter()
    if name == "rs-b2c":
        from . import rs_b2c

        files, info = rs_b2c.build(data_dir, out, chip_size or rs_b2c.CHIP_SIZE, seed,
                                   subset or rs_b2c.SOURCES)
    elif name == "aid-heldout":
        from . import aid_heldout

        if chip_size is not None:
            raise ValueError("--chip-size applies to rs-b2c only")
        files, info = aid_heldout.build(data_dir, out, seed, subset)
    else:
        raise ValueError(f"unknown caption set {name!r}; known {list(SETS)}")
    info = {"name": name, "format": "Karpathy JSON (RSICD/RSITMD/UCM-captions)", **info, "files": {}}
    for fname, items in files.items():
        write_karpathy(out / fname, items, name)
        splits = sorted({it.split for it in items})
        entry = {"images": len(items), "captions": sum(len(it.captions) for it in items), "splits": len(splits)}
        if len(splits) == 1:  # one evaluation set: its recall ceilings and chance levels
            entry["recall_ceilings"] = recall_ceilings([it.captions for it in items])
            entry["chance_recall"] = chance_recall([it.captions for it in items])
        else:  # several (groups): the lowest ceiling and the highest chance level of any of them
            per = [[it.captions for it in items if it.split == s] for s in splits]
            ceil, chance = [recall_ceilings(p) for p in per], [chance_recall(p) for p in per]
            entry["recall_ceilings_min_over_splits"] = {k: min(c[k] for c in ceil) for k in chance[0]}
            entry["chance_recall_max_over_splits"] = {k: max(c[k] for c in chance) for k in chance[0]}
        info["files"][fname] = entry
    info["build_seconds"] = round(time.perf_counter() - start, 1)
    write_info(out / "info.json", info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.caption_sets", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=SETS)
    ap.add_argument("--out", type=Path, required=True, help="new (or empty) output folder")
    ap.add_argument("--data", type=Path, default=DATA_DIR, help=f"shared data folder (default {DATA_DIR})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chip-size", type=int, default=None, help="rs-b2c chip size in pixels (default 256)")
    ap.add_argument("--only", default=None,
                    help="comma-separated subset: rs-b2c sources (P0706,P1888,spacenet) or AID class folders")
    args = ap.parse_args(argv)
    info = build_set(args.name, args.out, args.data, args.seed, args.chip_size, _names(args.only))
    for fname, entry in info["files"].items():
        print(f"{args.out / fname}: {entry['images']} images, {entry['captions']} captions")
    print(f"built in {info['build_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
