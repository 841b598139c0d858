"""Missing dependencies: what is missing, one button to install them (in a background task), diagnostics."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QPushButton,
                                 QVBoxLayout)

from .. import deps, installer


class InstallTask(QgsTask):
    """pip in a worker thread; its output goes to ``line`` (a queued signal, safe for widgets)."""

    line = pyqtSignal(str)

    def __init__(self, target: Path, wheelhouse: Path | None = None):
        super().__init__("rsclip-geo: installing dependencies", QgsTask.CanCancel)
        self.target, self.wheelhouse, self.rc = target, wheelhouse, None

    def run(self) -> bool:
        try:
            self.rc = installer.install(self.target, wheelhouse=self.wheelhouse, log=self.line.emit,
                                   canceled=self.isCanceled)
        except Exception as exc:  # pip missing, no interpreter found, disk full...
            self.line.emit(f"install failed: {type(exc).__name__}: {exc}")
            return False
        return self.rc == 0


class InstallDialog(QDialog):
    """What is missing or broken, and one button that (re)installs the dependencies; ``installed`` is emitted
    once pip succeeded (the button then stays disabled: restart QGIS)."""

    installed = pyqtSignal()

    def __init__(self, parent=None, problems=None, core_problem: str | None = None):
        super().__init__(parent)
        self.setWindowTitle("rsclip-geo: dependencies")
        self.task = None
        box = QVBoxLayout(self)
        problems = deps.check() if problems is None else problems
        lines = [p if isinstance(p, str) else p.describe() for p in problems]
        lines += [f"rsclip_geo core: {core_problem}"] if core_problem else []
        target = deps.deps_dir()
        if lines:
            head = "rsclip-geo needs Python packages that this QGIS does not have, or that do not work:\n  "
            head += "\n  ".join(lines)
        else:
            head = ("All dependencies are met and import in the worker process. If runs still fail with "
                    "'No module named ...', reinstall them here (repair).")
        intro = QLabel(
            head + f"\n\nThey are installed with pip into a folder of the plugin's own:\n  {target}\n"
            "QGIS's own packages are never changed (they are pinned), and those QGIS's Python already has "
            f"(numpy, pyproj, pillow...) are not installed again. {installer.SIZE_NOTE} Restart QGIS afterwards.",
            self)
        intro.setWordWrap(True)
        self.intro = intro
        box.addWidget(intro)
        self.offline = QCheckBox("Install offline from a folder of wheels (made with `pip download`)", self)
        self.wheelhouse = QgsFileWidget(self)
        self.wheelhouse.setStorageMode(QgsFileWidget.GetDirectory)
        box.addWidget(self.offline)
        box.addWidget(self.wheelhouse)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        box.addWidget(self.log)
        self.install_button = QPushButton("Install dependencies" if lines else "Reinstall (repair)", self)
        self.install_button.clicked.connect(self.start)
        self.diag_button = QPushButton("Diagnostics", self)
        self.diag_button.clicked.connect(lambda: self.log.setPlainText(deps.qgis_report()))
        buttons = QDialogButtonBox(QDialogButtonBox.Close, self)
        buttons.addButton(self.install_button, QDialogButtonBox.ActionRole)
        buttons.addButton(self.diag_button, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.reject)
        box.addWidget(buttons)
        self.target = target

    def start(self) -> None:
        wheels = Path(self.wheelhouse.filePath()) if self.offline.isChecked() and self.wheelhouse.filePath() else None
        self.task = InstallTask(self.target, wheels)
        self.task.line.connect(self.log.appendPlainText)
        self.task.taskCompleted.connect(lambda: self.done_message(True))
        self.task.taskTerminated.connect(lambda: self.done_message(False))
        self.install_button.setEnabled(False)
        QgsApplication.taskManager().addTask(self.task)

    def done_message(self, ok: bool) -> None:
        """After pip: success disables Install (nothing left to do but restart) and emits ``installed``."""
        if ok:
            self.install_button.setEnabled(False)
            self.install_button.setText("Installed: restart QGIS")
            self.log.appendPlainText("\nDone: restart QGIS to load rsclip-geo.")
            self.installed.emit()
        else:
            self.install_button.setEnabled(True)
            self.log.appendPlainText("\nThe installation did not complete; see the messages above.")
