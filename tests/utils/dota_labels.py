"""DOTA label lines read by hand, independently of training/data/boxes.py, to check it and what uses it."""

from __future__ import annotations

from pathlib import Path


def raw_objects(dota: Path, name: str) -> list[tuple[str, float, float]]:
    """(class, centre x, centre y) of every object line in labelTxt/<name>.txt (header lines skipped)."""
    out = []
    for line in (Path(dota) / "labelTxt" / f"{name}.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 9:
            xs, ys = [float(v) for v in parts[0:8:2]], [float(v) for v in parts[1:8:2]]
            out.append((parts[8], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2))
    return out
