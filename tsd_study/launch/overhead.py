"""The engine's overhead: the share of a study run's wall time not spent training or evaluating.

Everything else counts as overhead: planning, submission, process start-up and imports, polling, collection.
With ``slots`` jobs at a time the capacity is ``wall time x slots``; trained runs fill ``train + eval`` of it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from tsd_study.runs.store import RunDir


@dataclass(frozen=True)
class Overhead:
    """Wall time of a call, the training and evaluation time of the runs it trained, and its parallelism."""

    wall_seconds: float
    train_seconds: float
    eval_seconds: float
    runs: int
    slots: int

    @property
    def share(self) -> float:
        """Fraction of the capacity (wall time x slots) spent outside training and evaluation."""
        capacity = self.wall_seconds * self.slots
        return 1.0 - (self.train_seconds + self.eval_seconds) / capacity if capacity > 0 else 0.0

    def describe(self) -> str:
        return (f"overhead: {100 * self.share:.1f}% of {self.wall_seconds:.1f} s wall time x {self.slots} slot(s) "
                f"outside training and evaluation ({self.runs} run(s) trained: training {self.train_seconds:.1f} s, "
                f"evaluation {self.eval_seconds:.1f} s)")


def measure_overhead(run_dirs: Iterable[RunDir], started: datetime, wall_seconds: float,
                     max_concurrent: int) -> Overhead:
    """The overhead of a call that began at ``started`` (aware UTC) and lasted ``wall_seconds``.

    Runs count when they finished with an attempt (the manifest's) that started during the call.
    """
    since = started.replace(microsecond=0)
    trained = []
    for run_dir in run_dirs:
        manifest, metrics = run_dir.manifest(), run_dir.metrics()
        if manifest and metrics and datetime.fromisoformat(manifest["started_at"]) >= since:
            trained.append(metrics)
    return Overhead(wall_seconds=wall_seconds, train_seconds=sum(metrics["train_seconds"] for metrics in trained),
                    eval_seconds=sum(metrics["eval_seconds"] for metrics in trained), runs=len(trained),
                    slots=max(1, min(max_concurrent, len(trained))))
