"""Start worker.py with QGIS's own Python, feed it one request, follow its progress, cancel it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from . import deps

WORKER = Path(__file__).resolve().parent / "worker.py"
KILL_AFTER_CANCEL_S = 15.0


class WorkerError(RuntimeError):
    """The worker process died without an answer (its stderr tail is in the message)."""


def worker_command(deps_folder: Path | None, python: Path | None = None) -> list[str]:
    cmd = [str(python or deps.python_executable()), "-u", str(WORKER)]
    return cmd + (["--deps", str(deps_folder)] if deps_folder else [])


def _env() -> dict:
    """QGIS's environment minus its Python path tweaks (PYTHONHOME stays: it belongs to this interpreter)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def call(request: dict, deps_folder: Path | None = None, progress: Callable[[int, int], None] = lambda d, t: None,
         canceled: Callable[[], bool] = lambda: False, python: Path | None = None, poll_s: float = 0.1) -> dict:
    """Run one request to completion; returns the worker's final message (``ok``, ``result``/``error``)."""
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
    proc = subprocess.Popen(worker_command(deps_folder, python), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", env=_env(), creationflags=flags)
    with proc:  # closes the pipes and reaps the process, whatever happens
        return _follow(proc, request, deps_folder, python, progress, canceled, poll_s)


def _follow(proc, request, deps_folder, python, progress, canceled, poll_s) -> dict:
    lines: queue.Queue = queue.Queue()
    stderr_tail: deque = deque(maxlen=40)
    readers = [threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                                daemon=True),
               threading.Thread(target=lambda: [stderr_tail.append(line.rstrip()) for line in proc.stderr],
                                daemon=True)]
    for t in readers:
        t.start()
    _write(proc, json.dumps(request))
    cancel_sent = None
    final = None
    try:
        while True:
            if cancel_sent is None and canceled():
                cancel_sent = time.monotonic()
                _write(proc, "cancel")
            if cancel_sent is not None and time.monotonic() - cancel_sent > KILL_AFTER_CANCEL_S:
                proc.kill()
                return {"ok": False, "canceled": True, "error": "canceled (worker stopped)"}
            try:
                line = lines.get(timeout=poll_s)
            except queue.Empty:
                continue
            if line is None:
                break
            message = json.loads(line)
            if "progress" in message:
                progress(*message["progress"])
            else:
                final = message
    finally:
        try:
            proc.stdin.close()
        except OSError:  # a dead worker: nothing to flush to
            pass
        if proc.poll() is None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for t in readers:
            t.join(timeout=2)
    if final is None:
        proc.wait()
        raise WorkerError(f"the worker process ({WORKER.name}, {worker_command(deps_folder, python)[0]}) exited "
                          f"with code {proc.returncode} and no answer:\n" + "\n".join(stderr_tail))
    return final


def _write(proc, line: str) -> None:
    """One line to the worker; a worker that already died is reported by the reader, not here."""
    try:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    except (BrokenPipeError, OSError):
        pass
