"""What each action does with the rsclip_geo core, without QGIS: parameters, the core call, the outputs.

This module runs in the worker process (see worker.py), never inside QGIS: the
wheels the core needs (rasterio, pyogrio, shapely) bundle their own GDAL/GEOS/PROJ,
and inside the QGIS desktop binary their symbols resolve to QGIS's older copies
(measured: rasterio built on GDAL 3.10 ran on QGIS's 3.6; shapely 2.1 on GEOS 3.11
fails to write WKB). Outputs go through the core's atomic writers.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

ProgressCallback = Callable[[int, int], None]  # the core's (done, total)
MODEL_LOADED, CORE_DONE = 0.1, 0.95  # share of a run's progress bar: model loaded; the core's work done
ACTION_TITLES = {"search": "Search", "classify": "Classify tiles", "heatmap": "Heatmap", "count": "Count",
                 "index": "Index"}


class TaskCanceled(Exception):
    """Raised from the core's progress callback to stop a run the user canceled."""


class ModelChoiceError(ValueError):
    """The chosen model cannot be loaded; the message says what to change in the plugin's settings."""


PLUGIN_MODEL_HINT = ("choose the model in rsclip-geo's Settings...: the shipped default, a bundle folder, or one "
                     "of the pulled models listed there (models are pulled with the rsclip-geo Python package's "
                     "command line, which the plugin does not include)")


def model_error_for_plugin(message: str) -> str:
    """The core's model error without its command-line advice (the plugin ZIP ships no CLI), plus what to do
    in QGIS instead."""
    message = re.sub(r"\s*\((?:see|run) `rsclip-geo [^`]*`\)", "", message)
    parts = [part for part in message.split("; ") if "`rsclip-geo " not in part and "--model" not in part]
    return "; ".join(parts).rstrip(" ;.") + "; " + PLUGIN_MODEL_HINT


class Progress:
    """The core's progress callback; raises TaskCanceled once ``canceled()`` is true.

    The whole run is reported as (done, STEPS): loading the model, then the core's own
    (done, total) mapped onto ``span`` (a fraction of the run), then writing the outputs, so
    the bar moves while the model loads and an index is reused, not 0 % then 100 %.
    ``check()`` is called again before outputs are written, so a late cancel writes nothing.
    """

    STEPS = 1000

    def __init__(self, report: ProgressCallback, canceled: Callable[[], bool]):
        self.report, self.canceled = report, canceled
        self.span = (0.0, 1.0)
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if total:
            lo, hi = self.span
            self.at(lo + (hi - lo) * min(1.0, max(0.0, done / total)))
        self.check()

    def at(self, fraction: float) -> None:
        """The run is ``fraction`` done (never reported backwards)."""
        step = int(round(min(1.0, max(0.0, fraction)) * self.STEPS))
        if step > self.last:
            self.last = step
            self.report(step, self.STEPS)
        self.check()

    def check(self) -> None:
        if self.canceled():
            raise TaskCanceled()


@dataclass
class RunParams:
    """What every action needs: the scene file, how to read and tile it, the model, where to write."""

    scene: str = ""
    scene_name: str = ""  # the layer name, for the group
    crs_wkt: str = ""  # the scene layer's CRS as QGIS sees it; result layers get the same
    bands: tuple[int, ...] | None = None  # 1-based, as R,G,B (or one band); None: the core's default
    tile_size_m: float = 0.0  # 0: the model's input size in pixels (or tile_size_px)
    tile_size_px: int = 0  # used when tile_size_m is 0 (e.g. map units converted to pixels)
    edge: str = "shift"  # last row/column: shift (inside, whole scene covered), pad or drop (rsclip_geo.raster.tiling)
    model: str | None = None  # None: shipped default; a bundle folder; or a pulled model name
    device: str = "auto"
    batch_size: int = 16
    rotations: int = 1  # 2 or 4: every tile embedded as the mean of its first quarter turns (rsclip_geo's --rotations)
    out_dir: str = ""  # parent folder of the run folder (default: beside the scene)

    def tile(self):
        from rsclip_geo.raster.tiling import TileSpec

        if self.tile_size_m and self.tile_size_m > 0:
            return TileSpec(size_m=float(self.tile_size_m), edge=self.edge)
        return TileSpec(size_px=int(self.tile_size_px) if self.tile_size_px else None, edge=self.edge)

    def scene_options(self) -> dict:
        return {"bands": list(self.bands)} if self.bands else {}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunParams":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("bands", "scales_m", "scales_px"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass
class SearchParams(RunParams):
    query: str = ""
    top: int = 20
    negative: str = ""  # comma-separated texts to steer away from
    standout: float = 0.0  # keep only hits this many standard deviations above the scene's mean score (0: all)


@dataclass
class ClassifyParams(RunParams):
    labels: str = ""  # comma-separated
    labels_file: str = ""
    top_k: int = 3
    min_score: float = 0.0


@dataclass
class HeatmapParams(RunParams):
    query: str = ""
    scales_m: tuple[float, ...] = ()  # window sizes in metres (or scales_px); both empty: the core's defaults
    scales_px: tuple[int, ...] = ()


@dataclass
class CountParams(RunParams):
    object_name: str = ""
    max_count: int = 10


@dataclass
class IndexParams(RunParams):
    rebuild: bool = False
    output: str = ""  # an explicit index file (always rebuilt); empty: the sidecar beside the scene


PARAMS = {"search": SearchParams, "classify": ClassifyParams, "heatmap": HeatmapParams, "count": CountParams,
          "index": IndexParams}


def subject(action: str, p: RunParams) -> str:
    """What a run is about, for its group name and run folder."""
    if action in ("search", "heatmap"):
        return f"'{p.query}'"
    if action == "classify":
        return Path(p.labels_file).name if p.labels_file else p.labels
    if action == "count":
        return p.object_name
    return ""


def group_name(action: str, p: RunParams) -> str:
    scene = p.scene_name or Path(p.scene).stem
    what = subject(action, p)
    return f"{ACTION_TITLES[action]}: {what} ({scene})" if what else f"{ACTION_TITLES[action]} ({scene})"


def run_folder(action: str, p: RunParams, progress: Progress | None = None) -> Path:
    if progress is not None:
        progress.at(CORE_DONE)  # the core's work is done: outputs are written next
    base = Path(p.out_dir) if p.out_dir else Path(p.scene).parent
    slug = re.sub(r"[^A-Za-z0-9]+", "-", subject(action, p)).strip("-").lower()[:40] or "run"
    folder = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{action}-{slug}"
    n = 1
    while folder.exists():
        n += 1
        folder = folder.with_name(folder.name.split("~")[0] + f"~{n}")
    folder.mkdir(parents=True)
    return folder


# ---- one function per action: (params, model, progress) -> {"outputs", "info", "message"} ----------
def search(p: SearchParams, model, progress: Progress) -> dict:
    from rsclip_geo.tasks.search import search as core_search
    from rsclip_geo.outputs.writers import write_vector

    negative = [n.strip() for n in p.negative.split(",") if n.strip()]
    found = core_search(p.scene, p.query, top=p.top, negative=negative, model=model, scales=[p.tile()],
                        progress=progress, **p.scene_options())
    index = found.indexes[0]
    hits, dropped = standing_out(found.frame, found.scores[0], p.standout)
    folder = run_folder("search", p, progress)
    outputs = {"hits": write_vector(hits, folder / "hits.gpkg"), "scores": found.write_scores(folder / "scores.tif")}
    best = float(hits["score"].iloc[0]) if len(hits) else None
    message = f"{len(hits)} hits for '{p.query}' among {len(index)} tiles" + (
        f"; best score {best:.3f}" if best is not None else "") + (
        f"; {dropped} of the top {p.top} did not stand out by {p.standout:g} sd" if dropped else "")
    return {"outputs": outputs, "info": {"n_hits": len(hits), "n_tiles": len(index), "best": best},
            "message": message}


def standing_out(hits, scores, standout: float):
    """The hits whose score is at least ``standout`` standard deviations above the mean of all the scene's tile
    scores (a relative cut: on any scene size only tiles where the query stands out), and how many were dropped."""
    import numpy as np

    if standout <= 0 or len(scores) < 2 or not len(hits):
        return hits, 0
    mean, sd = float(np.mean(scores)), float(np.std(scores))
    if sd <= 1e-9:  # every tile scores the same: nothing stands out
        return hits.iloc[:0].copy(), len(hits)
    keep = hits[hits["score"].to_numpy() >= mean + standout * sd].copy()
    return keep, len(hits) - len(keep)


def classify(p: ClassifyParams, model, progress: Progress) -> dict:
    from rsclip_geo import read_labels_file, tile_classify
    from rsclip_geo.runtime.prompts import parse_labels

    labels = read_labels_file(p.labels_file) if p.labels_file else parse_labels(p.labels)
    result = tile_classify(p.scene, labels, model=model, tile=p.tile(), top_k=p.top_k, min_score=p.min_score,
                           progress=progress, **p.scene_options())
    folder = run_folder("classify", p, progress)
    return {"outputs": {"labels": result.write(folder / "labels.gpkg")},
            "info": {"labels": result.class_names, "counts": result.label_counts()},
            "message": result.summary.describe()}


def heatmap(p: HeatmapParams, model, progress: Progress) -> dict:
    from rsclip_geo.tasks.heatmap import heatmap as core_heatmap

    heat = core_heatmap(p.scene, p.query, scales=list(p.scales_px) or None, scales_m=list(p.scales_m) or None,
                        model=model, progress=progress, **p.scene_options())
    folder = run_folder("heatmap", p, progress)
    stats = {k: (float(v) if isinstance(v, (int, float)) else str(v)) for k, v in heat.stats.items()}
    rows, cols = heat.shape
    return {"outputs": {"heatmap": heat.write(folder / "heatmap.tif")},
            "info": {"stats": stats, "shape": [rows, cols]},
            "message": f"heatmap of '{p.query}': {cols} x {rows} cells from {heat.stats.get('windows_used', '?')} "
                       "windows"}


def count(p: CountParams, model, progress: Progress) -> dict:
    from rsclip_geo.tasks.count import count_objects

    counts = count_objects(p.scene, p.object_name, max_count=p.max_count, model=model, tile=p.tile(),
                           progress=progress, **p.scene_options())
    folder = run_folder("count", p, progress)
    return {"outputs": {"counts": counts.write(folder / "counts.gpkg")},
            "info": {"total": counts.total, "max_count": counts.max_count, "n_tiles": len(counts)},
            "message": f"{p.object_name}: {counts.total} in {len(counts)} tiles (RemoteCount prompts: every tile "
                       "gets a count >= 1; read the probabilities)"}


def index(p: IndexParams, model, progress: Progress) -> dict:
    from rsclip_geo.embeddings.index import build_index, load_or_build_index, sidecar_path, write_index
    from rsclip_geo.outputs.guard import check_outputs_apart

    if p.output:  # Processing's file output may name anything, the scene included: never write over an input
        check_outputs_apart({"output": p.output}, [p.scene])
        built = build_index(p.scene, model, [p.tile()], progress=progress, **p.scene_options())
        progress.check()
        path = write_index(built, p.output, overwrite=True)
    else:
        built = load_or_build_index(p.scene, model, scales=[p.tile()], rebuild=p.rebuild, progress=progress,
                                    **p.scene_options())
        path = sidecar_path(p.scene)
    return {"outputs": {"index": path}, "info": {"n_tiles": len(built)},
            "message": f"index of {Path(p.scene).name}: {len(built)} tiles in {path}"}


ACTIONS = {"search": search, "classify": classify, "heatmap": heatmap, "count": count, "index": index}


def execute(action: str, params: RunParams, progress: ProgressCallback, canceled: Callable[[], bool]) -> dict:
    """Load the model, run ``action``; TaskCanceled as soon as ``canceled()`` says so."""
    import rsclip_geo
    from rsclip_geo.errors import BundleError

    checked = Progress(progress, canceled)
    start = time.perf_counter()
    checked.at(0.01)
    try:
        model = rsclip_geo.load_model(params.model, device=params.device, batch_size=int(params.batch_size),
                                      rotations=int(params.rotations))
    except BundleError as exc:
        raise ModelChoiceError(model_error_for_plugin(str(exc))) from exc
    checked.at(MODEL_LOADED)
    checked.span = (MODEL_LOADED, CORE_DONE)
    out = ACTIONS[action](params, model, checked)
    checked.at(1.0)
    out["outputs"] = {k: str(v) for k, v in out["outputs"].items()}
    out["info"]["seconds"] = time.perf_counter() - start
    out["info"]["provider"] = model.provider
    return out


def _register_audit() -> None:
    """The label audit (audit_run.py) adds itself to PARAMS/ACTIONS when imported; the worker imports by file."""
    try:
        from . import audit_run  # noqa: F401
        from . import segment_run  # noqa: F401
    except ImportError:  # imported by file in the worker: no parent package
        import audit_run  # noqa: F401
        import segment_run  # noqa: F401


_register_audit()
