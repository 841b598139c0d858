"""Lazy imports of the export extra, with one clear error when it is missing."""

from __future__ import annotations

import contextlib
import logging

from ..errors import MissingDependencyError

INSTALL_HINT = "pip install 'rsclip-geo[export]'"


def require_torch():
    """Import and return torch (and check open_clip + onnx are importable too)."""
    missing = []
    for module in ("torch", "open_clip", "onnx"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependencyError(
            f"exporting checkpoints needs {', '.join(missing)} (the export extra): {INSTALL_HINT}"
        )
    import torch

    return torch


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


@contextlib.contextmanager
def drop_root_messages(*prefixes: str):
    """Silence known-misleading messages that libraries log on the root logger (only these, only here)."""
    flt = _DropMessages(prefixes)
    logging.root.addFilter(flt)
    try:
        yield
    finally:
        logging.root.removeFilter(flt)
