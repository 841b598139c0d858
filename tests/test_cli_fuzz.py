"""A hostile user's numbers (0, -1, 1e12, 1e-7, 999999999) in every numeric option of the scene commands: each run ends in a
result or a one-line error, never a traceback, and never asks for more memory than a laptop has."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from tests.utils.rasters import BLUE, GREEN, RED, colour_blocks, write_geotiff
from tests.utils.tiny_dense import build_tiny_dense_bundle

REPO = Path(__file__).resolve().parents[1]
MEMORY_LIMIT = 4 << 30  # bytes of address space: --smooth 1e12 once asked for 58 TiB, --scale 1e-7 took 17 GB


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_hostile_numbers_never_crash_a_command(tmp_path_factory):
    from tests.utils.cli_fuzz import COMMANDS, numeric_options
    from rsclip_geo.cli import main

    assert sum(len(numeric_options(main.commands[c])) for c in COMMANDS) >= 40  # the fuzz sees the options
    assert "--smooth" in numeric_options(main.commands["heatmap"])
    assert "--threshold" in numeric_options(main.commands["segment"])
    work = tmp_path_factory.mktemp("fuzz")
    bundle = build_tiny_dense_bundle(work / "bundle")
    scene = write_geotiff(work / "s.tif", colour_blocks([[RED, GREEN, BLUE], [BLUE, RED, GREEN]], 32))
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}  # address space, not memory, is limited
    done = subprocess.run([sys.executable, "-m", "tests.utils.cli_fuzz", str(bundle), str(scene), str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, preexec_fn=_limit_memory, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    findings = json.loads(done.stdout.strip().splitlines()[-1])
    assert findings == [], "\n\n".join(f"{f['command']} {f['option']} {f['value']}:\n{f['error']}" for f in findings)
