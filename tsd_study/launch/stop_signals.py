"""The signals SLURM stops a training job with: a checkpoint between two iterations, then a requeue or an exit.

SLURM announces each way it stops a job with a signal to the job's tasks:

- its time limit: submitit's ``--signal`` (USR2) ahead of it; submitit checkpoints the job and requeues it;
- preemption with a grace time (``GraceTime``): SIGTERM while the job still runs, GraceTime seconds before SIGKILL
  (the user signal instead with ``PreemptParameters=send_user_signal``): handled as the time limit's signal;
- scancel, ``scontrol requeue``, preemption without grace time, the time limit itself: SIGTERM once the job is
  already ending (COMPLETING), KillWait seconds before SIGKILL. The job saves a checkpoint and exits; SLURM decides
  whether it comes back (a requeue) or not (a cancel: the next launch resumes from the checkpoint).

submitit itself only logs SIGTERM. A checkpoint saved in the middle of an iteration would count the iterations done
so far with weights that may already hold the next update, and random states drawn half way, so a signal that lands
while the training loop runs is acted on when the running iteration has ended (after the checkpoint hook); anywhere
else (building the runner, skipping the batches a resumed run trained, validating, evaluating) at once. As in
submitit, rank 0 alone acts; the other ranks end with the job.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import submitit
from mmengine.hooks import Hook
from mmengine.runner import Runner

from tsd_study.runs.store import latest_checkpoint

SCONTROL_TIMEOUT_S = 10
KEEP_CHECKPOINTS_INFO = "keep_ckpt_ids"  # mmengine's CheckpointHook rotates the checkpoints it lists there
SignalHandler = Callable[[int, FrameType | None], Any]


class StopSignalHook(Hook):
    """Takes over submitit's handlers of its requeue signal and of SIGTERM in task 0 of a job, and acts on them at
    the end of the running training iteration.

    Attributes:
        completed: the iterations a checkpoint saved now records.
    """

    priority = "LOWEST"  # after the checkpoint hook's save at an iteration's end

    def __init__(self) -> None:
        self.completed = 0
        self._runner: Runner | None = None
        self._in_training_loop = False
        self._pending: Callable[[], None] | None = None
        self._requeue: SignalHandler | None = None

    @classmethod
    def install(cls) -> StopSignalHook:
        """A hook whose handlers replace submitit's in this process (task 0 of a submitit job; elsewhere the hook
        only watches)."""
        hook = cls()
        if os.environ.get("SUBMITIT_EXECUTOR") and submitit.JobEnvironment().global_rank == 0:
            requeue_signal = signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]
            submitit_handler = signal.getsignal(requeue_signal)
            if callable(submitit_handler):
                hook._requeue = submitit_handler
                signal.signal(requeue_signal, hook._on_requeue_signal)
                if os.environ["SUBMITIT_EXECUTOR"] == "slurm":
                    signal.signal(signal.SIGTERM, hook._on_sigterm)
        return hook

    def save_checkpoint(self) -> None:
        """Save the training state as ``iter_<completed>.pth`` unless nothing was trained since the start or the
        resumed checkpoint (``completed`` 0, or a checkpoint that far exists)."""
        if self._runner is not None and self.completed > 0:
            save_checkpoint_now(self._runner, self.completed)

    def before_train(self, runner: Runner) -> None:
        self._runner, self.completed = runner, runner.iter

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        self._in_training_loop = True

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """The iteration's update and hooks are done: act on a signal that came during it; until the next one, only
        loading its batch (which draws random numbers) remains in the loop."""
        self.completed = runner.iter + 1
        self._act_on_pending()
        self._in_training_loop = self.completed < runner.max_iters

    def before_val(self, runner: Runner) -> None:
        self._in_training_loop = False
        self._act_on_pending()

    def after_val(self, runner: Runner) -> None:
        self._in_training_loop = self._runner is not None and 0 < self.completed < runner.max_iters

    def after_train(self, runner: Runner) -> None:
        self._in_training_loop = False
        self._act_on_pending()
        self._runner = None

    def _on_requeue_signal(self, signum: int, frame: FrameType | None) -> None:
        self._when_between_iterations(lambda: self._submitit_requeue(signum))

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        state = slurm_job_state()
        if state == "RUNNING":  # preempted with a grace time, or signalled by hand (scancel --signal=TERM)
            self._when_between_iterations(lambda: self._submitit_requeue(signum))
        else:  # SLURM ends the job: no requeue of ours, even one a signal before asked for
            self._when_between_iterations(lambda: self._save_and_exit(signum, state or "unknown"), replace=True)

    def _when_between_iterations(self, action: Callable[[], None], replace: bool = False) -> None:
        """Act now outside the training loop; inside it at the end of the running iteration, where the first
        signal's action is taken unless a later one ``replace``s it."""
        if not self._in_training_loop:
            action()
        elif self._pending is None or replace:
            self._pending = action

    def _act_on_pending(self) -> None:
        action, self._pending = self._pending, None
        if action is not None:
            action()

    def _submitit_requeue(self, signum: int) -> None:
        """submitit's own handling of its signal: checkpoint (TrainJob.checkpoint), requeue, exit."""
        assert self._requeue is not None
        self._requeue(signum, None)

    def _save_and_exit(self, signum: int, state: str) -> None:
        self.save_checkpoint()
        saved = (f"checkpoint of iteration {self.completed} saved" if self._runner is not None and self.completed
                 else "nothing trained to save")
        print(f"tsd-study: {signal.Signals(signum).name} while SLURM ends this job ({state}): {saved}, exiting",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)


def slurm_job_state() -> str:
    """This SLURM job's state as slurmctld has it now (RUNNING, COMPLETING, ...); '' when it does not say."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", "--oneliner", os.environ["SLURM_JOB_ID"]],
                               capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except (KeyError, OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"\bJobState=(\S+)", shown.stdout)
    return match.group(1) if match else ""


def save_checkpoint_now(runner: Runner, completed: int) -> None:
    """Save ``runner``'s state after ``completed`` iterations as ``iter_<completed>.pth``, atomically, unless a
    checkpoint that far exists; mmengine's checkpoint hook deletes it in turn, as one of its own."""
    work_dir = Path(runner.work_dir)
    if latest_checkpoint(work_dir)[1] >= completed:
        return
    hub = runner.message_hub
    if KEEP_CHECKPOINTS_INFO in hub.runtime_info:
        hub.update_info(KEEP_CHECKPOINTS_INFO, [*hub.get_info(KEEP_CHECKPOINTS_INFO), completed])
    partial = f".iter_{completed}.pth.partial"
    runner.save_checkpoint(str(work_dir), filename=partial, meta=dict(iter=completed, epoch=runner.epoch))
    os.replace(work_dir / partial, work_dir / f"iter_{completed}.pth")
