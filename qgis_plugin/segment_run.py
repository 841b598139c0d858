"""The 'segment' worker action: rsclip_geo.segment, text -> object polygons (no QGIS import; runs in the worker).

Adds itself to runs.PARAMS / runs.ACTIONS when imported (runs.py imports it at its end, like audit_run.py).
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from . import runs
except ImportError:  # the worker imports the plugin's modules by file, not as a package
    import runs

RunParams, Progress, run_folder = runs.RunParams, runs.Progress, runs.run_folder


@dataclass
class SegmentParams(RunParams):
    query: str = ""
    threshold: str = "auto"  # 'auto' (Otsu on the scene's scores) or a number
    min_area_m2: float = 0.0  # 0: the core's default (half a dense cell)
    negative: str = ""  # comma-separated texts to steer away from
    refine: str = ""  # a SAM/MobileSAM ONNX folder; empty: no refinement


def segment(p: SegmentParams, model, progress: Progress) -> dict:
    from rsclip_geo.tasks.segment import segment as core_segment

    threshold = p.threshold.strip() or "auto"
    result = core_segment(p.scene, p.query, model=model, threshold=threshold,
                          min_area_m2=p.min_area_m2 if p.min_area_m2 > 0 else None,
                          negative=[t.strip() for t in p.negative.split(",") if t.strip()],
                          refine=p.refine or None, progress=progress, **p.scene_options())
    folder = run_folder("segment", p, progress)
    outputs = {"objects": result.write(folder / "objects.gpkg"), "dense": result.dense.write(folder / "dense.tif")}
    info = {"n_objects": len(result.polygons), "threshold": result.threshold, "threshold_rule": result.threshold_rule,
            "windows": result.stats.get("windows")}
    return {"outputs": outputs, "info": info, "message": result.message}


runs.PARAMS["segment"], runs.ACTIONS["segment"] = SegmentParams, segment
runs.ACTION_TITLES["segment"] = "Find objects"
