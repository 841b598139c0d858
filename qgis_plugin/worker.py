"""The worker process: runs one rsclip-geo action outside QGIS and reports on stdout, one JSON a line.

    python worker.py [--deps FOLDER]      (request: one JSON line on stdin)

Request ``{"command": "run", "action": "search", "params": {...}}`` (or ``"check"``, ``"diagnostics"``);
a later ``cancel`` line on stdin stops the run at the core's next progress callback. Replies:
``{"progress": [done, total]}`` lines, then ``{"ok": true, "result": {...}}`` or
``{"ok": false, "canceled": bool, "error": "message"}``. Everything else goes to stderr.
Why a separate process: see runs.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _protocol_stream():
    """stdout is only ours: anything a library prints (Python or C) goes to stderr instead."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deps", type=Path, default=None)
    args = parser.parse_args(argv)
    out = _protocol_stream()
    lock = threading.Lock()

    def send(message: dict) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    sys.path.insert(0, str(HERE))
    import deps  # noqa: E402 (the plugin's own modules, by file; no qgis import)
    import runs  # noqa: E402
    sys.path.remove(str(HERE))
    if args.deps:
        deps.add_paths(args.deps)
    else:
        deps.add_vendor()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    request = json.loads(sys.stdin.readline() or "{}")
    canceled = threading.Event()

    def listen() -> None:
        for line in sys.stdin:
            if line.strip() == "cancel":
                canceled.set()
    threading.Thread(target=listen, daemon=True).start()

    command = request.get("command")
    try:
        if command == "check":
            problems = [p.describe() for p in deps.check()]
            core = deps.core_problem()
            send({"ok": not problems and core is None, "result": {"problems": problems, "core": core}})
        elif command == "diagnostics":
            send({"ok": True, "result": {"text": deps.runtime_report()}})
        elif command == "run":
            action = request["action"]
            params = runs.PARAMS[action].from_json(request["params"])
            result = runs.execute(action, params, lambda d, t: send({"progress": [d, t]}), canceled.is_set)
            send({"ok": True, "result": result})
        else:
            send({"ok": False, "canceled": False, "error": f"unknown worker command {command!r}"})
            return 2
    except runs.TaskCanceled:
        send({"ok": False, "canceled": True, "error": "canceled"})
    except Exception as exc:  # every failure becomes one message for the plugin
        from_core = type(exc).__module__.startswith("rsclip_geo") or isinstance(exc, (ValueError, OSError))
        traceback.print_exc(file=sys.stderr)
        send({"ok": False, "canceled": False, "error": str(exc) if from_core else f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
