"""The 'audit' worker action: rsclip_geo.audit over a labels file (no QGIS import; runs in the worker process).

Adds itself to runs.PARAMS / runs.ACTIONS when imported (runs.py imports it at its end). Windows keep inside the scene (edge 'shift'), whatever the
other actions' edge setting says: an audit window is placed on a polygon, not on a grid over the whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from . import runs
except ImportError:  # the worker imports the plugin's modules by file, not as a package
    import runs

RunParams, Progress, run_folder = runs.RunParams, runs.Progress, runs.run_folder


@dataclass
class AuditParams(RunParams):
    labels: str = ""  # a vector file the worker can read (Processing writes the layer to a GeoPackage first)
    label_field: str = ""
    label_map: str = ""  # JSON file: code -> words; empty: none
    flag_below: float = 0.3
    max_windows: int = 16
    window_px: int = 0  # window size in scene pixels; 0: the model's input size


def audit(p: AuditParams, model, progress: Progress) -> dict:
    from rsclip_geo.tasks.audit import audit as core_audit
    from rsclip_geo.raster.tiling import TileSpec

    tile = TileSpec(size_px=int(p.window_px) if p.window_px else None, edge="shift")
    result = core_audit(p.labels, p.scene, p.label_field, model=model, tile=tile, label_map=p.label_map or None,
                        flag_below=p.flag_below, max_windows=int(p.max_windows), progress=progress,
                        **p.scene_options())
    folder = run_folder("audit", p, progress)
    summary = result.summary
    path = result.write(folder / "audit.gpkg", inputs=[p.labels, p.scene, p.label_map or None])
    overall = summary.overall
    info = {"n_features": summary.n_features, "n_scored": overall.n if overall else 0,
            "n_flagged": overall.flagged if overall else 0,
            "agreement": overall.mean if overall else None}
    return {"outputs": {"audit": path}, "info": info, "message": summary.describe()}


runs.PARAMS["audit"], runs.ACTIONS["audit"], runs.ACTION_TITLES["audit"] = AuditParams, audit, "Audit labels"
