"""Audit a land-cover map against its imagery: which polygons (or class-raster segments) the model disagrees with.

run: the task (``audit``, ``audit_class_raster``); labels: class names and label maps; units: polygons and
raster segments to judge; windows: the tiles each unit is judged on; summary: agreement statistics; output:
the typed result and its files.
"""

from .output import AuditResult, check_audit_output, read_audit_summary, write_audit
from .run import AUDIT_COLUMNS, FLAG_BELOW, MAX_WINDOWS, audit, audit_class_raster

__all__ = ["audit", "audit_class_raster", "AuditResult", "write_audit", "read_audit_summary", "check_audit_output",
           "AUDIT_COLUMNS", "FLAG_BELOW", "MAX_WINDOWS"]
