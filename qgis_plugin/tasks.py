"""Background runs: one QgsTask per action, one parameters dataclass in, one RunResult out.

``run()`` happens in a QGIS worker thread: it hands the parameters to the worker
process (worker.py, QGIS's own Python with the plugin's dependency folder), which
loads the model, calls the rsclip_geo core and writes the outputs. ``finished()``
happens in the GUI thread: it turns the outputs into layers. Errors become a
failed RunResult carrying the core's message, never a crash; cancel goes to the
worker, which raises from the core's progress callback.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qgis.core import QgsTask

from . import deps
from .runs import ACTION_TITLES, RunParams, group_name, subject
from .worker_client import WorkerError, call

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    action: str
    params: RunParams
    ok: bool = False
    canceled: bool = False
    message: str = ""
    group: str = ""
    outputs: dict = field(default_factory=dict)  # role -> path (str)
    info: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)  # layer ids added to the project (finished())


def profile_deps_folder() -> Path | None:
    try:
        return deps.deps_dir()
    except Exception:  # no QgsApplication: no profile folder
        return None


def run_in_worker(action: str, params: RunParams, progress: Callable[[int, int], None],
                  canceled: Callable[[], bool], deps_folder: Path | None = None) -> dict:
    """The worker's final answer for ``action``; ``ok`` False with ``error`` (and ``canceled``) on failure."""
    try:
        return call({"command": "run", "action": action, "params": params.to_json()}, deps_folder, progress, canceled)
    except (WorkerError, OSError) as exc:  # interpreter missing, worker crashed
        return {"ok": False, "canceled": False, "error": str(exc)}


class RsclipTask(QgsTask):
    """One action in the background; subclasses only name their action."""

    action = ""

    def __init__(self, params: RunParams, on_done: Callable[[RunResult], None] | None = None,
                 add_layers: bool = True):
        super().__init__(f"rsclip-geo {ACTION_TITLES[self.action].lower()}: "
                         f"{subject(self.action, params) or Path(params.scene).name}", QgsTask.CanCancel)
        self.params = params
        self.on_done = on_done
        self.add_layers = add_layers
        self.deps_folder = profile_deps_folder()  # read here, in the GUI thread
        self.layer_tree_view = None  # the plugin sets QGIS's layer tree view: new groups are shown expanded there
        self.result = RunResult(self.action, params, group=group_name(self.action, params))

    def report_progress(self, done: int, total: int) -> None:
        """The worker's (done, total) as the task's percentage (QgsTask.progress() stays QGIS's getter)."""
        if total:
            self.setProgress(min(100.0, 100.0 * done / total))

    def run(self) -> bool:
        answer = run_in_worker(self.action, self.params, self.report_progress, self.isCanceled, self.deps_folder)
        r = self.result
        if answer.get("ok"):
            result = answer["result"]
            r.ok, r.outputs, r.info, r.message = True, result["outputs"], result["info"], result["message"]
            return True
        r.canceled = bool(answer.get("canceled")) or self.isCanceled()
        r.message = "canceled" if r.canceled else answer.get("error", "unknown error")
        return False

    def finished(self, ok: bool) -> None:
        if ok and self.result.ok and self.add_layers:
            from .layers import add_result

            try:
                self.result.layers = add_result(self.result, view=self.layer_tree_view)
            except Exception as exc:  # a styling problem must not lose the outputs
                log.error("adding layers failed:\n%s", traceback.format_exc())
                self.result.message = f"outputs written to {self.result.outputs}, but adding layers failed: {exc}"
        if not ok and not self.result.message:
            self.result.canceled, self.result.message = True, "canceled"
        if self.on_done:
            self.on_done(self.result)


class SearchTask(RsclipTask):
    action = "search"


class ClassifyTask(RsclipTask):
    action = "classify"


class HeatmapTask(RsclipTask):
    action = "heatmap"


class CountTask(RsclipTask):
    action = "count"


class IndexTask(RsclipTask):
    action = "index"


TASKS = {cls.action: cls for cls in (SearchTask, ClassifyTask, HeatmapTask, CountTask, IndexTask)}


class WorkerRequestTask(QgsTask):
    """Any other worker request (diagnostics, check) without blocking the GUI; ``on_done(answer)``."""

    def __init__(self, description: str, request: dict, on_done: Callable[[dict], None]):
        super().__init__(description, QgsTask.CanCancel)
        self.request, self.on_done = request, on_done
        self.deps_folder = profile_deps_folder()
        self.answer: dict = {}

    def run(self) -> bool:
        try:
            self.answer = call(self.request, self.deps_folder, canceled=self.isCanceled)
        except (WorkerError, OSError) as exc:
            self.answer = {"ok": False, "error": str(exc)}
        return bool(self.answer.get("ok"))

    def finished(self, ok: bool) -> None:
        self.on_done(self.answer)
