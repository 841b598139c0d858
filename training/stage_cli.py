"""The command line shared by the stages that start from a bundle (rotation distillation, text tuning).

Why: both take ``--config --bundle --out [--resume]`` to run, and ``export --checkpoint --bundle -o`` to write a
run's bundle again from one of its checkpoints; one parser keeps their options the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def bundle_stage_main(module: str, doc: str, run: Callable, export: Callable, argv=None, *,
                      checkpoint_help: str, bundle_help: str) -> int:
    """``python -m MODULE --config C --bundle B --out O [--resume]`` or ``python -m MODULE export ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        ap = argparse.ArgumentParser(prog=f"python -m {module} export")
        ap.add_argument("--checkpoint", type=Path, required=True, help=checkpoint_help)
        ap.add_argument("--bundle", type=Path, required=True, help="The bundle the run started from.")
        ap.add_argument("-o", "--out", type=Path, required=True)
        a = ap.parse_args(argv[1:])
        print(export(a.checkpoint, a.bundle, a.out))
        return 0
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, required=True, help=bundle_help)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", action="store_true", help="Go on from OUT/checkpoint_last.pt.")
    a = ap.parse_args(argv)
    run(a.config, a.bundle, a.out, a.resume, log=lambda s: print(s, flush=True))
    return 0
