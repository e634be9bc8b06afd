"""The stop signals of a SLURM job, delivered to this process: acted on between two training iterations, a requeue
while the job runs (preemption), a checkpoint and an exit while SLURM ends it (scancel, requeue).

A stand-in Runner and a stand-in ``scontrol``; tests/test_slurm_study.py has the same on the real cluster, with
training. Runtime a few seconds (most of it importing mmengine).
"""
from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import torch
from mmengine.logging import MessageHub

from tsd_study.launch.stop_signals import KEEP_CHECKPOINTS_INFO, StopSignalHook
from tsd_study.runs.store import latest_checkpoint

MAX_ITERS = 10


class StandInRunner:
    """What the hook reads of a Runner; ``save_checkpoint`` writes a small torch file with the meta it is given."""

    def __init__(self, work_dir: Path, start_iter: int = 0) -> None:
        self.work_dir, self.iter, self.epoch, self.max_iters = str(work_dir), start_iter, 0, MAX_ITERS
        self.message_hub = MessageHub(f"stop-signals-{id(self)}")

    def save_checkpoint(self, out_dir: str, filename: str, meta: dict) -> None:
        torch.save({"meta": meta, "keep": self.message_hub.get_info(KEEP_CHECKPOINTS_INFO)}, Path(out_dir) / filename)

    def train_iteration(self, hook: StopSignalHook) -> None:
        """One iteration as mmengine's loop runs it: the hook before and after it, then the count."""
        hook.before_train_iter(self, self.iter)
        hook.after_train_iter(self, self.iter)
        self.iter += 1


class SubmititHandler:
    """Stands in for submitit's handler of its signal: records the signal, checkpoints through the hook, exits."""

    def __init__(self) -> None:
        self.hook: StopSignalHook | None = None
        self.signals: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        assert self.hook is not None
        self.hook.save_checkpoint()
        raise SystemExit(-1)


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[StopSignalHook, SubmititHandler]]:
    """The hook installed as in task 0 of a SLURM job over a stand-in of submitit's handler (restored after)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGUSR2, signal.SIGTERM)}
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_PROCID", "0")
    submitit_handler = SubmititHandler()
    signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        hook = StopSignalHook.install()
        submitit_handler.hook = hook
        yield hook, submitit_handler
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def job_state_is(state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``scontrol`` first on PATH that shows job 7 in ``state``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "JobId=7 JobName=tsd-study JobState={state} Reason=None"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_a_signal_during_an_iteration_is_acted_on_at_its_end(handlers: tuple[StopSignalHook, SubmititHandler],
                                                             tmp_path: Path) -> None:
    hook, submitit_handler = handlers
    runner = StandInRunner(tmp_path, start_iter=2)
    hook.before_train(runner)
    runner.train_iteration(hook)
    hook.before_train_iter(runner, runner.iter)
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGUSR2)  # a second signal adds nothing
    assert submitit_handler.signals == []
    with pytest.raises(SystemExit):
        hook.after_train_iter(runner, runner.iter)
    assert submitit_handler.signals == [signal.SIGUSR2]
    assert latest_checkpoint(tmp_path) == (tmp_path / "iter_4.pth", 4)
    assert torch.load(tmp_path / "iter_4.pth")["meta"]["iter"] == 4


def test_outside_the_iterations_a_signal_is_acted_on_at_once(handlers: tuple[StopSignalHook, SubmititHandler],
                                                            tmp_path: Path) -> None:
    hook, submitit_handler = handlers
    runner = StandInRunner(tmp_path)
    with pytest.raises(SystemExit):  # building the Runner: nothing to save
        os.kill(os.getpid(), signal.SIGUSR2)
    hook.before_train(runner)
    for _ in range(3):
        runner.train_iteration(hook)
    hook.before_val(runner)  # a validation between two iterations
    with pytest.raises(SystemExit):
        os.kill(os.getpid(), signal.SIGUSR2)
    assert submitit_handler.signals == [signal.SIGUSR2] * 2
    assert latest_checkpoint(tmp_path) == (tmp_path / "iter_3.pth", 3)


def test_sigterm_while_the_job_runs_is_a_preemption_submitit_requeues(
        handlers: tuple[StopSignalHook, SubmititHandler], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hook, submitit_handler = handlers
    job_state_is("RUNNING", tmp_path, monkeypatch)
    runner = StandInRunner(tmp_path)
    hook.before_train(runner)
    runner.train_iteration(hook)
    os.kill(os.getpid(), signal.SIGTERM)  # while the next batch loads
    with pytest.raises(SystemExit):
        runner.train_iteration(hook)
    assert submitit_handler.signals == [signal.SIGTERM]
    assert latest_checkpoint(tmp_path) == (tmp_path / "iter_2.pth", 2)


def test_sigterm_while_slurm_ends_the_job_saves_a_checkpoint_and_exits(
        handlers: tuple[StopSignalHook, SubmititHandler], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    hook, submitit_handler = handlers
    job_state_is("COMPLETING", tmp_path, monkeypatch)
    runner = StandInRunner(tmp_path)
    runner.message_hub.update_info(KEEP_CHECKPOINTS_INFO, [1])  # the checkpoint hook's list
    hook.before_train(runner)
    runner.train_iteration(hook)
    hook.before_train_iter(runner, runner.iter)
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        hook.after_train_iter(runner, runner.iter)
    assert exited.value.code == 128 + signal.SIGTERM
    assert submitit_handler.signals == []
    assert torch.load(tmp_path / "iter_2.pth")["keep"] == [1, 2]  # rotated with the hook's own
    assert "SIGTERM while SLURM ends this job (COMPLETING): checkpoint of iteration 2 saved" in capsys.readouterr().err


def test_nothing_is_saved_before_the_first_iteration_or_over_a_checkpoint_as_far(tmp_path: Path) -> None:
    hook = StopSignalHook()
    runner = StandInRunner(tmp_path)
    hook.before_train(runner)
    hook.save_checkpoint()
    assert latest_checkpoint(tmp_path) == (None, 0)
    runner.train_iteration(hook)
    torch.save({"meta": {"iter": 1}}, tmp_path / "iter_1.pth")  # the checkpoint hook's save of that iteration
    before = (tmp_path / "iter_1.pth").read_bytes()
    hook.save_checkpoint()
    assert (tmp_path / "iter_1.pth").read_bytes() == before and sorted(os.listdir(tmp_path)) == ["iter_1.pth"]


def test_sigterm_while_slurm_ends_the_job_overrides_a_requeue_asked_for_before(
        handlers: tuple[StopSignalHook, SubmititHandler], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The time limit's signal, then scancel within the same iteration: the job is cancelled, not requeued."""
    hook, submitit_handler = handlers
    job_state_is("COMPLETING", tmp_path, monkeypatch)
    runner = StandInRunner(tmp_path)
    hook.before_train(runner)
    hook.before_train_iter(runner, runner.iter)
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(SystemExit) as exited:
        hook.after_train_iter(runner, runner.iter)
    assert exited.value.code == 128 + signal.SIGTERM and submitit_handler.signals == []
    assert latest_checkpoint(tmp_path) == (tmp_path / "iter_1.pth", 1)
