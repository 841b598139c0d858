"""Compare a rebuilt bundle with the shipped one, file by file and byte for byte.

A rebuild that differs should say where: for a JSON file (``model.json``) the keys whose values differ are listed,
so a difference in one provenance field reads differently from a different model.

    python -m training.bundle_compare SHIPPED REBUILT    # exit 0 only when every file matches
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsclip_geo.export import file_sha256

NOT_REBUILT = ("MODEL_CARD.md",)  # written by hand
MAX_PATHS = 12


def json_differences(a, b, path: str = "") -> list[str]:
    """The dotted paths (``dense.parity.cosine_min``, ``templates[3]``) where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            here = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(here + (" (only in the shipped file)" if k in a else " (only in the rebuilt file)"))
            else:
                out += json_differences(a[k], b[k], here)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in json_differences(x, y, f"{path}[{i}]")]
    if a == b and type(a) is type(b):
        return []
    return [path or "(the whole document)"]


def _json_detail(shipped: Path, rebuilt: Path) -> str:
    try:
        paths = json_differences(json.loads(shipped.read_text()), json.loads(rebuilt.read_text()))
    except (ValueError, UnicodeDecodeError) as e:
        return f" (not comparable as JSON: {e})"
    if not paths:
        return " (same values, different bytes: key order or number formatting)"
    more = f", and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else ""
    return " in " + ", ".join(paths[:MAX_PATHS]) + more


def compare_bundles(shipped: Path, rebuilt: Path) -> list[tuple[str, str, str]]:
    """(status, file name, detail) for every file of either folder; status is same, DIFFERENT, MISSING or EXTRA."""
    shipped, rebuilt = Path(shipped), Path(rebuilt)
    for folder in (shipped, rebuilt):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such bundle folder")
    rows = []
    for f in sorted(p for p in shipped.iterdir() if p.is_file() and p.name not in NOT_REBUILT):
        other = rebuilt / f.name
        if not other.is_file():
            rows.append(("MISSING", f.name, "not in the rebuilt bundle"))
        elif (digest := file_sha256(f)) == file_sha256(other):
            rows.append(("same", f.name, digest[:16]))
        else:
            rows.append(("DIFFERENT", f.name, _json_detail(f, other).strip() if f.suffix == ".json" else ""))
    for f in sorted(p for p in rebuilt.iterdir() if p.is_file() and p.name not in NOT_REBUILT):
        if not (shipped / f.name).is_file():
            rows.append(("EXTRA", f.name, "not in the shipped bundle"))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bundle_compare", description=__doc__.splitlines()[0])
    ap.add_argument("shipped", type=Path)
    ap.add_argument("rebuilt", type=Path)
    a = ap.parse_args(argv)
    try:
        rows = compare_bundles(a.shipped, a.rebuilt)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for status, name, detail in rows:
        print(f"{status:<9} {name}  {detail}".rstrip())
    return 0 if all(status == "same" for status, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
