"""The engine's overhead: the share of a study run's wall time not spent training or evaluating.

With ``slots`` jobs at a time the capacity is ``wall time x slots``; trained runs fill ``train + eval`` of it. The
rest is split in two. *Idle* is the end of the call when no run is left to start: each slot whose last run ended
before the call's last run waits for it. *Overhead* is everything else, the engine's own cost: planning,
submission, process start-up and imports, polling, collection.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tsd_study.runs.store import RunDir


@dataclass(frozen=True)
class Overhead:
    """Wall time of a call, the training and evaluation time of the runs it trained, its parallelism and the slot
    time left idle at its end."""

    wall_seconds: float
    train_seconds: float
    eval_seconds: float
    idle_seconds: float
    runs: int
    slots: int

    @property
    def capacity(self) -> float:
        return self.wall_seconds * self.slots

    @property
    def share(self) -> float:
        """Fraction of the capacity spent outside training, evaluation and the idle end: the engine's cost."""
        busy = self.train_seconds + self.eval_seconds + self.idle_seconds
        return 1.0 - busy / self.capacity if self.capacity > 0 else 0.0

    @property
    def idle_share(self) -> float:
        """Fraction of the capacity left idle at the end because no run was left to start."""
        return self.idle_seconds / self.capacity if self.capacity > 0 else 0.0

    def describe(self) -> str:
        return (f"overhead: {100 * self.share:.1f}% of {self.wall_seconds:.1f} s wall time x {self.slots} slot(s) "
                f"outside training and evaluation, besides {100 * self.idle_share:.1f}% idle at the end with no run "
                f"left to start ({self.runs} run(s) trained: training {self.train_seconds:.1f} s, evaluation "
                f"{self.eval_seconds:.1f} s)")


def measure_overhead(run_dirs: Iterable[RunDir], started: datetime, wall_seconds: float,
                     max_concurrent: int) -> Overhead:
    """The overhead of a call that began at ``started`` (aware UTC) and lasted ``wall_seconds``.

    Runs count when they finished with an attempt (the manifest's) that started during the call. A run ends when its
    metrics.json is written; the last ``slots`` runs to end are the ones the slots were running when the queue ran
    dry, and each waits idle from its end to the last one's.
    """
    since = started.replace(microsecond=0)
    trained, ends = [], []
    for run_dir in run_dirs:
        manifest, metrics = run_dir.manifest(), run_dir.metrics()
        if manifest and metrics and datetime.fromisoformat(manifest["started_at"]) >= since:
            trained.append(metrics)
            ends.append(run_dir.metrics_file.stat().st_mtime)
    slots = max(1, min(max_concurrent, len(trained)))
    final = sorted(ends)[-slots:]
    return Overhead(wall_seconds=wall_seconds, train_seconds=sum(metrics["train_seconds"] for metrics in trained),
                    eval_seconds=sum(metrics["eval_seconds"] for metrics in trained),
                    idle_seconds=sum(final[-1] - end for end in final), runs=len(trained), slots=slots)
