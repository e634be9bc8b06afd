"""The callable the executors submit, and the checkpoint it saves when SLURM stops it (time limit, preemption).

This module stays light (no torch, no mmdetection) so that the launcher can pickle ``TrainJob()`` without importing
what training needs: the job process imports ``tsd_study.launch.training`` when it starts training.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from tsd_study.runs.store import REQUEUED, RunDir, RunState, RunStatus, latest_checkpoint

if TYPE_CHECKING:
    from .stop_signals import StopSignalHook


class TrainJob(submitit.helpers.Checkpointable):
    """The submitit callable ``TrainJob()(run_dir)``. On preemption or timeout submitit calls ``checkpoint`` (through
    :class:`~tsd_study.launch.stop_signals.StopSignalHook`, between two iterations): the training state is saved and
    the job requeued, to resume from that checkpoint with the iteration count continuing.
    """

    def __init__(self) -> None:
        self._stops: StopSignalHook | None = None

    def __call__(self, run_dir: Path | str) -> dict[str, Any]:
        from .stop_signals import StopSignalHook  # torch and mmdetection: in the job process only
        from .training import train_and_evaluate

        self._stops = StopSignalHook.install()
        return train_and_evaluate(run_dir, hooks=(self._stops,))

    def checkpoint(self, run_dir: Path | str) -> submitit.helpers.DelayedSubmission:
        """Save the training state now and requeue this run; the resumed attempt continues at the next iteration.

        Called by submitit's signal handler, in task 0 only.
        """
        run = RunDir(run_dir)
        if self._stops is not None:
            self._stops.save_checkpoint()
        _, resume_iter = latest_checkpoint(run.work_dir)

        def requeued(status: RunStatus) -> None:
            status.state = RunState.QUEUED
            status.end_attempt(REQUEUED, end_iter=resume_iter)

        run.update_status(requeued)
        return submitit.helpers.DelayedSubmission(TrainJob(), run_dir)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # never the live hook and its Runner

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._stops = None
