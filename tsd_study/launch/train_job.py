"""The callable the executors submit, and the checkpoint it saves when preempted or timed out.

This module stays light (no torch, no mmdetection) so that the launcher can pickle ``TrainJob()`` without importing
what training needs: the job process imports ``tsd_study.launch.training`` when it starts training.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from tsd_study.runs.store import REQUEUED, RunDir, RunState, RunStatus

from .job_environment import latest_checkpoint

if TYPE_CHECKING:
    from mmengine.runner import Runner


class TrainJob(submitit.helpers.Checkpointable):
    """The submitit callable ``TrainJob()(run_dir)``. On preemption or timeout submitit calls ``checkpoint``: the live
    Runner is saved and the job requeued, to resume from that checkpoint with the iteration count continuing.
    """

    def __init__(self) -> None:
        self._runner: Runner | None = None

    def __call__(self, run_dir: Path | str) -> dict[str, Any]:
        from .training import train_and_evaluate  # torch and mmdetection: in the job process only

        return train_and_evaluate(run_dir, on_training=self._watch)

    def _watch(self, runner: Runner | None) -> None:
        self._runner = runner

    def checkpoint(self, run_dir: Path | str) -> submitit.helpers.DelayedSubmission:
        """Save the training state now and requeue this run; the resumed attempt redoes the interrupted iteration.

        Called by submitit from its signal handler, in task 0 only.
        """
        run = RunDir(run_dir)
        if self._runner is not None:
            save_checkpoint_now(self._runner)
        _, resume_iter = latest_checkpoint(run.work_dir)

        def requeued(status: RunStatus) -> None:
            status.state = RunState.QUEUED
            status.end_attempt(REQUEUED, end_iter=resume_iter)

        run.update_status(requeued)
        return submitit.helpers.DelayedSubmission(TrainJob(), run_dir)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # never the live Runner

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._runner = None


def save_checkpoint_now(runner: Runner) -> None:
    """Save ``runner``'s state as ``iter_<completed iterations>.pth``, atomically, unless a checkpoint that far exists.

    A signal can land after the checkpoint hook saved iteration N + 1 but before the loop counted it: that
    checkpoint is then the better one.
    """
    completed, work_dir = runner.iter, Path(runner.work_dir)
    if latest_checkpoint(work_dir)[1] >= completed:
        return
    partial = f".iter_{completed}.pth.partial"
    runner.save_checkpoint(str(work_dir), filename=partial, meta=dict(iter=completed, epoch=runner.epoch))
    os.replace(work_dir / partial, work_dir / f"iter_{completed}.pth")

