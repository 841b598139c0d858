"""Every numeric option of the scene commands at hostile values, in one process: what is not a clean exit.

Run by tests/test_cli_fuzz.py in a subprocess with an address-space limit, so that a regression that asks for
terabytes fails the test instead of the machine. Prints one JSON list of findings on stdout.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path

import click
from click.testing import CliRunner

VALUES = ("0", "-1", "1e12", "1e-7", "999999999")
COMMANDS = {  # command -> arguments before the option ("S": the scene, "L": its land-cover polygons, "O.<ext>": an
    # output in the run's folder)
    "tile-classify": ("S", "--labels", "red,blue", "-o", "O.gpkg"),
    "search": ("S", "red", "-o", "O.gpkg"),
    "heatmap": ("S", "red", "-o", "O.tif"),
    "count": ("S", "car", "-o", "O.gpkg"),
    "segment": ("S", "red", "-o", "O.gpkg"),
    "index": ("S", "-o", "O.parquet"),
    "audit": ("L", "S", "--label-field", "name", "-o", "O.gpkg"),
}
TEXT_NUMBERS = ("scale", "threshold")  # options parsed from text by a callback


def numeric_options(command: click.Command) -> list[str]:
    out = []
    for p in command.params:
        if not isinstance(p, click.Option) or p.is_flag:
            continue
        numeric = isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType))
        if numeric or any(word in p.name for word in TEXT_NUMBERS):
            out.append(next(o for o in p.opts if o.startswith("--")))
    return out


def write_labels(scene: Path, path: Path) -> Path:
    """Two land-cover polygons over ``scene``'s left and right halves, field 'name'."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(scene) as ds:
        b, crs = ds.bounds, ds.crs
    mid = (b.left + b.right) / 2
    gpd.GeoDataFrame({"name": ["red", "blue"]}, geometry=[box(b.left, b.bottom, mid, b.top),
                                                          box(mid, b.bottom, b.right, b.top)], crs=crs).to_file(path)
    return path


def fuzz(bundle: Path, scene: Path, work: Path) -> list[dict]:
    from rsclip_geo.cli import main

    labels = write_labels(scene, work / "labels.gpkg")
    findings, exits = [], {}
    for name, base in COMMANDS.items():
        for option in numeric_options(main.commands[name]):
            for value in VALUES:
                run_dir = Path(tempfile.mkdtemp(dir=work))
                named = {"S": str(scene), "L": str(labels)}
                argv = [named.get(a, str(run_dir / a) if a.startswith("O.") else a) for a in base]
                threads = [] if option == "--threads" else ["--threads", "1"]  # few arenas under the memory limit
                result = CliRunner().invoke(main, [name, *argv, option, value, "--model", str(bundle), "-q", *threads])
                crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
                if crashed or "out of memory" in result.output:  # a number is refused by a check, not by the RAM
                    error = "".join(traceback.format_exception(result.exception)) if crashed else result.output
                    findings.append({"command": name, "option": option, "value": value, "error": error[-800:]})
                exits[result.exit_code] = exits.get(result.exit_code, 0) + 1
    print(f"exit codes: {exits}", file=sys.stderr)
    return findings


if __name__ == "__main__":
    bundle, scene, work = (Path(a) for a in sys.argv[1:4])
    print(json.dumps(fuzz(bundle, scene, work)))
