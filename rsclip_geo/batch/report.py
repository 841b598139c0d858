"""What a batch job reports: one result per scene and the end-of-job summary.

A failing scene becomes a failed result (scene, message), never an exception that stops
the others; unusable collection entries are reported the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .collection import Collection

ProgressCallback = Callable[["SceneResult", int, int], None]  # (result, scenes finished, scenes total)


@dataclass
class SceneResult:
    """What happened to one scene: status 'done', 'skipped' (already finished) or 'failed'."""

    name: str
    scene: str
    output: str | None
    status: str = "failed"
    error: str | None = None
    reason: str | None = None  # why it was (re)built: 'new', 'the scene file changed', ...
    tiles: int = 0
    seconds: float = 0.0
    worker: str = ""
    traceback: str | None = None  # for unexpected (non-rsclip) errors


@dataclass
class BatchSummary:
    """The end-of-job report."""

    kind: str
    out_dir: str
    results: list[SceneResult]
    extra: list[str] = field(default_factory=list)  # partitions in OUT_DIR that are not in this collection
    seconds: float = 0.0
    workers: int = 1

    def _with(self, status: str) -> list[SceneResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[SceneResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[SceneResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SceneResult]:
        return self._with("failed")

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        n = len(self.results)
        rate = len(self.done) / self.seconds * 60 if self.seconds > 0 else 0.0
        lines = [f"batch {self.kind}: {n} scene{'s' if n != 1 else ''}: {len(self.done)} done, "
                 f"{len(self.skipped)} skipped (already finished), {len(self.failed)} failed; "
                 f"{self.seconds:.1f} s ({rate:.1f} scenes/min) on {self.workers} worker"
                 f"{'s' if self.workers != 1 else ''}; output {self.out_dir}"]
        lines += [f"  FAILED {r.name}: {r.error}" for r in self.failed]
        if self.extra:
            lines.append(f"  note: {len(self.extra)} other partition(s) in {self.out_dir} are not part of this "
                         "collection and are read by search too: " + ", ".join(Path(p).name for p in self.extra[:5])
                         + (" ..." if len(self.extra) > 5 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "out_dir": self.out_dir, "seconds": self.seconds, "workers": self.workers,
                "done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed),
                "extra": self.extra, "scenes": [asdict(r) for r in self.results]}


def problems_as_results(collection: Collection) -> list[SceneResult]:
    """The collection's unusable entries, as failed scenes."""
    return [SceneResult(p.name, p.name, None, "failed", p.message) for p in collection.problems]
