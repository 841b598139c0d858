"""Planning a batch job on the client, before anything runs: one plain-data task per scene.

The model is resolved here once (a bundle path every worker can read, and its fingerprint),
the output folder is made ready, and each scene gets its partition path; jobs hold only
plain data, so they pickle to any worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..runtime.bundle import bundle_fingerprint, read_bundle
from .collection import Collection, SceneRef
from ..runtime.encoder import ClipModel, check_rotations, with_rotations
from ..errors import BundleError, OptionError, OutputError
from .partitions import partition_files, partition_path
from ..runtime.paths import resolve_model_path
from .worker_model import ModelSpec

KINDS = ("index", "classify")


@dataclass(frozen=True)
class SceneJob:
    """One scene's task: everything is plain data, so it pickles to any worker."""

    kind: str
    scene: SceneRef
    output: str
    model: ModelSpec
    params: dict
    rebuild: bool = False
    overwrite: bool = False


def model_spec(model, device: str, threads: int | None, batch_size: int,
               rotations: int | None = None) -> tuple[ModelSpec, ClipModel | None]:
    """Resolve the model on the client once: a path the workers load, and its fingerprint. ``rotations``: None =
    a loaded model's own (1 for a path); a loaded model with other rotations is refused, not silently overridden."""
    if isinstance(model, ClipModel):
        if rotations is not None and rotations != model.rotations:
            raise OptionError(f"rotations={rotations} but the given model was loaded with rotations={model.rotations}"
                              "; load it with load_model(..., rotations=...) or pass the bundle path instead")
        bundle, loaded = model.bundle, model
        device = "cuda" if model.provider == "CUDAExecutionProvider" else "cpu"
        batch_size, rotations = model.batch_size, model.rotations
    else:
        bundle, loaded = read_bundle(resolve_model_path(model)), None
        rotations = 1 if rotations is None else rotations
    if bundle.root is None:
        raise BundleError(f"model {bundle.name!r} has no bundle folder; workers need a path to load it from")
    rotations = check_rotations(rotations)
    spec = ModelSpec(str(Path(bundle.root).resolve()), device, threads, batch_size,
                     with_rotations(bundle_fingerprint(bundle), rotations), bundle.name, rotations=rotations)
    return spec, loaded


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder, created and checked writable (a batch output is a folder of partitions)."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; the batch output is a folder of partitions")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc})") from exc
    if not os.access(out, os.W_OK):
        raise OutputError(f"{out}: output folder is not writable")
    return out.resolve()


def plan_jobs(kind: str, collection: Collection, out_dir: Path, spec: ModelSpec, params: dict,
              rebuild: bool = False, overwrite: bool = False) -> tuple[list[SceneJob], list[str]]:
    """One job per scene, and the partitions already in OUT_DIR that belong to none of them."""
    if kind not in KINDS:
        raise OptionError(f"kind must be one of {KINDS}, got {kind!r}")
    jobs = [SceneJob(kind, s, str(partition_path(out_dir, s)), spec, params, rebuild, overwrite)
            for s in collection.scenes]
    planned = {Path(j.output).name for j in jobs}
    extra = [str(p) for p in partition_files(out_dir) if p.name not in planned]
    return jobs, extra
