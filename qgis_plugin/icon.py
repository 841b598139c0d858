"""The plugin icon (icon.png beside this file)."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon

ICON_PATH = Path(__file__).resolve().parent / "icon.png"


def icon() -> QIcon:
    return QIcon(str(ICON_PATH))
