"""Run a plan's runs through submitit, locally or on SLURM, and keep the run store's states right.

One job per run. Finished runs are skipped (``force`` retrains them from scratch), runs another live process trains
are waited for, a failed run is recorded and does not stop the others, a cancelled one is recorded as cancelled (the
next call retrains it). Locally at most ``max_concurrent`` jobs live at once; on SLURM all runs with the same
resources go out as one job array whose parallelism is ``max_concurrent``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import submitit
from filelock import FileLock
from submitit.slurm.slurm import SlurmJob
from tqdm import tqdm

from tsd_study.runs.listing import status_line
from tsd_study.runs.plan import Plan, PlannedRun
from tsd_study.runs.stale import StaleRunsError, stale_runs
from tsd_study.runs.store import ENDED_STATES, LOG_TAIL_LINES, RunDir, RunState, RunStatus, RunStore, StoreError

from .job_environment import THREADS_VARIABLE
from .sites import Site, check_reachable, load_site
from .train_job import TrainJob

EXECUTORS = ("local", "slurm")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would stop real trainings
LOCAL_POLL_S = 0.5
SIGNAL_DELAY_S = 90  # submitit's default: the checkpoint signal comes this long before the time limit
SUBMITIT_DIR = ".submitit"  # under the store root: submitit's pickles and the jobs' stdout/stderr
RECORDED_ENDS = (RunState.FINISHED, RunState.FAILED)  # states a job writes last, as it ends


class Backend(Protocol):
    """What the scheduling loop needs from an executor."""

    name: str
    max_concurrent: int
    poll_s: float

    def check(self, runs: Sequence[PlannedRun]) -> None:
        """Raise before anything is submitted if a run cannot be executed here."""

    def free_slots(self, active: int) -> int:
        """How many more jobs to submit now, with ``active`` of ours alive."""

    def submit(self, runs: Sequence[tuple[PlannedRun, RunDir]]) -> list[submitit.Job[Any]]:
        """One job per run, in order."""

    def refresh(self, jobs: Sequence[submitit.Job[Any]]) -> None:
        """Update the jobs' states (one cluster query for all)."""

    def was_cancelled(self, job: submitit.Job[Any]) -> bool:
        """Whether an ended job was cancelled (rather than crashed) when it recorded nothing itself."""


@dataclass
class LocalBackend:
    """submitit's LocalExecutor, which starts each job at once: this backend meters them out.

    Each job gets an equal share of the cores as torch threads (one each with the default max_concurrent).
    """

    folder: Path
    max_concurrent: int
    name: str = "local"
    poll_s: float = LOCAL_POLL_S
    _executor: submitit.LocalExecutor = field(init=False)

    def __post_init__(self) -> None:
        threads = max(1, (os.cpu_count() or 1) // self.max_concurrent)
        self._executor = submitit.LocalExecutor(folder=self.folder)
        self._executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN,
                                         setup=[f"export {THREADS_VARIABLE}={threads} OMP_NUM_THREADS={threads}"])

    def check(self, runs: Sequence[PlannedRun]) -> None:
        return None  # every run trains as one process on this machine

    def free_slots(self, active: int) -> int:
        return self.max_concurrent - active

    def submit(self, runs: Sequence[tuple[PlannedRun, RunDir]]) -> list[submitit.Job[Any]]:
        return [self._executor.submit(TrainJob(), run_dir.path.resolve()) for _, run_dir in runs]

    def refresh(self, jobs: Sequence[submitit.Job[Any]]) -> None:
        return None  # local jobs answer from their process

    def was_cancelled(self, job: submitit.Job[Any]) -> bool:
        return job.state == "INTERRUPTED"  # ended by a signal


@dataclass
class SlurmBackend:
    """submitit's SlurmExecutor with a site profile; runs with equal resources become one job array."""

    folder: Path
    site: Site
    max_concurrent: int
    name: str = "slurm"

    @property
    def poll_s(self) -> float:
        """The site's polling interval: each poll asks sacct about every job."""
        return self.site.poll_s

    def check(self, runs: Sequence[PlannedRun]) -> None:
        for run in runs:
            self.resources(run)
        with self.environment():
            check_reachable(self.site)

    def free_slots(self, active: int) -> int:
        return sys.maxsize  # SLURM queues them; the array's parallelism limits what runs at once

    def resources(self, run: PlannedRun) -> dict[str, Any]:
        """sbatch resources of a run: GPU runs get whole nodes' GPUs, one task per GPU; CPU runs their CPU tasks."""
        if run.gpus > 0:
            nodes, gpus_per_node = self.site.gpu_layout(run.gpus)
            return dict(nodes=nodes, ntasks_per_node=gpus_per_node, gpus_per_node=gpus_per_node)
        return dict(nodes=1, ntasks_per_node=run.cpu_tasks)

    def submit(self, runs: Sequence[tuple[PlannedRun, RunDir]]) -> list[submitit.Job[Any]]:
        groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
        for index, (run, _) in enumerate(runs):
            groups.setdefault(tuple(sorted(self.resources(run).items())), []).append(index)
        jobs: list[submitit.Job[Any] | None] = [None] * len(runs)
        with self.environment():
            for resources, indices in groups.items():
                executor = self._executor(dict(resources))
                array = executor.map_array(TrainJob(), [runs[index][1].path.resolve() for index in indices])
                for index, job in zip(indices, array, strict=True):
                    jobs[index] = job
        return [job for job in jobs if job is not None]

    def refresh(self, jobs: Sequence[submitit.Job[Any]]) -> None:
        if jobs:
            with self.environment():
                SlurmJob.watcher.update()

    def was_cancelled(self, job: submitit.Job[Any]) -> bool:
        return job.watcher.get_state(job.job_id, mode="cache").upper().startswith("CANCELLED")

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """The site's variables (SLURM_CONF) exported while SLURM commands run."""
        saved = {key: os.environ.get(key) for key in self.site.environment()}
        os.environ.update(self.site.environment())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @property
    def signal_delay_s(self) -> int:
        """SIGNAL_DELAY_S, but at most a quarter of the time limit.

        SLURM may send the signal up to 60 s early: with a short limit and the full delay, every attempt would be
        signalled before it trained an iteration.
        """
        return min(SIGNAL_DELAY_S, self.site.time_min * 60 // 4)

    def _executor(self, resources: dict[str, Any]) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=self.site.max_requeues,
                                          python=sys.executable)
        optional = {key: getattr(self.site, key) for key in ("account", "qos", "constraint")
                    if getattr(self.site, key) is not None}
        executor.update_parameters(
            job_name="tsd-study", partition=self.site.partition, cpus_per_task=self.site.cpus_per_task,
            mem=f"{round(self.site.mem_gb * 1024)}M", time=self.site.time_min, signal_delay_s=self.signal_delay_s,
            array_parallelism=self.max_concurrent, additional_parameters={"requeue": True},
            setup=[*self.site.setup, f"export {THREADS_VARIABLE}={self.site.cpus_per_task}",
                   # Slurm >= 22.05 no longer passes --cpus-per-task from sbatch to srun: each task would get one CPU
                   "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK"], **optional, **resources)
        return executor


def check_executor(executor: str, site: str | Path | Site | None, max_concurrent: int | None) -> None:
    """Raise a one-line ValueError naming the parameter unless ``executor`` is known, has a site profile exactly when
    it is ``slurm``, and ``max_concurrent`` is None or at least 1."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor: unknown executor {executor!r}; known: {', '.join(EXECUTORS)}")
    if executor == "local" and site is not None:
        raise ValueError("site: a site profile is for the slurm executor; the local executor takes none")
    if executor == "slurm" and site is None:
        raise ValueError("site: the slurm executor needs a site profile (--site NAME, e.g. local)")
    if max_concurrent is not None and (type(max_concurrent) is not int or max_concurrent < 1):
        raise ValueError(f"max_concurrent: must be at least 1, got {max_concurrent!r}")


def make_backend(executor: str, store: RunStore, site: str | Path | Site | None = None,
                 max_concurrent: int | None = None) -> Backend:
    """The backend for ``executor`` (``local`` or ``slurm``); SLURM needs a site profile, the local executor none."""
    check_executor(executor, site, max_concurrent)
    folder = store.root.resolve() / SUBMITIT_DIR
    if site is None:  # the local executor, as checked
        return LocalBackend(folder=folder, max_concurrent=max_concurrent or os.cpu_count() or 1)
    profile = site if isinstance(site, Site) else load_site(site)
    return SlurmBackend(folder=folder, site=profile, max_concurrent=max_concurrent or profile.max_concurrent)


def run_plan(plan: Plan, store: RunStore, backend: Backend, *, force: bool = False, retrain_stale: bool = False,
             progress: bool = True, show_runs: bool = False) -> dict[str, RunState]:
    """Train every run of ``plan`` that is not finished (all of them with ``force``); returns {run_id: state}.

    A run trained from another version of its config (``stale_runs``) stops the launch before anything is submitted,
    unless ``retrain_stale`` retrains it from scratch. ``progress`` draws a bar; ``show_runs`` also prints each run's
    status line (metrics or error) as it ends.
    """
    backend.check(plan.runs)
    stale = [] if force else stale_runs(plan, store)
    if stale and not retrain_stale:
        raise StaleRunsError.listing(stale, store)
    run_dirs = {run.run_id: store.add(run.spec, run.uses) for run in plan.runs}
    _discard(list(run_dirs.values()) if force else [run_dirs[run.run_id] for run in stale])
    return _Scheduler(plan, run_dirs, backend, progress, show_runs).run()


def _discard(run_dirs: list[RunDir]) -> None:
    busy = [run_dir.run_id for run_dir in run_dirs if run_dir.is_busy()]
    if busy:
        raise StoreError(f"cannot retrain runs another process is training: {', '.join(busy)}")
    for run_dir in run_dirs:
        run_dir.discard_results()


class _Scheduler:
    """The polling loop: submit what may start, settle what ended, follow runs other processes train.

    A run is submitted under the launcher's claim on it (held until its job ends), so a second launcher of the same
    plan follows it instead of submitting it again; the job's training lock is what guarantees one training.
    """

    def __init__(self, plan: Plan, run_dirs: dict[str, RunDir], backend: Backend, progress: bool,
                 show_runs: bool) -> None:
        self.backend = backend
        self.run_dirs = run_dirs
        self.states = {run_id: RunState.FINISHED for run_id, run_dir in run_dirs.items()
                       if run_dir.metrics() is not None}
        self.waiting = [run for run in plan.runs if run.run_id not in self.states]
        self.active: dict[str, submitit.Job[Any]] = {}
        self.followed: dict[str, tuple[PlannedRun, RunStatus]] = {}  # and its status when following began
        self.claims: dict[str, FileLock] = {}
        self.shown_summary = ""
        self.show_runs = show_runs
        self.bar = tqdm(total=len(plan.runs), initial=len(self.states), unit="run", disable=not progress,
                        desc=f"{plan.profile} runs ({backend.name})")

    def run(self) -> dict[str, RunState]:
        with self.bar:
            while self.waiting or self.active or self.followed:
                self._submit_ready()
                self._settle_ended()
                self._check_followed()
                self._show_summary()
                if self.waiting or self.active or self.followed:
                    time.sleep(self.backend.poll_s)
        return self.states

    def _submit_ready(self) -> None:
        """Claim and submit as many waiting runs as there are free slots; runs claimed elsewhere are followed."""
        slots = max(0, self.backend.free_slots(len(self.active)))
        chosen: list[PlannedRun] = []
        waiting: list[PlannedRun] = []
        for run in self.waiting:
            if len(chosen) == slots:
                waiting.append(run)
            elif self._claim(run):
                chosen.append(run)
            else:
                self.followed[run.run_id] = (run, self.run_dirs[run.run_id].status())
        self.waiting = waiting
        if not chosen:
            return
        for run in chosen:
            self.run_dirs[run.run_id].update_status(_queued)
        jobs = self.backend.submit([(run, self.run_dirs[run.run_id]) for run in chosen])
        self.active.update((run.run_id, job) for run, job in zip(chosen, jobs, strict=True))

    def _claim(self, run: PlannedRun) -> bool:
        """Take the run's claim unless another launcher holds it or a job (maybe of a dead launcher) trains it."""
        run_dir = self.run_dirs[run.run_id]
        claim = run_dir.claim()
        if claim is None:
            return False
        if run_dir.is_training():
            claim.release()
            return False
        self.claims[run.run_id] = claim
        return True

    def _settle_ended(self) -> None:
        """Settle the runs whose job ended, or whose job recorded the run's end and is only exiting: its slot is free
        once the run's files are final, not after the process's teardown."""
        self.backend.refresh(list(self.active.values()))
        for run_id, job in list(self.active.items()):
            if self.run_dirs[run_id].status().state in RECORDED_ENDS or job.done():
                del self.active[run_id]
                self._settle(run_id, job)

    def _settle(self, run_id: str, job: submitit.Job[Any]) -> None:
        """Record how a job ended when it could not itself (cancelled, killed, crashed before its handler)."""
        run_dir = self.run_dirs[run_id]
        status = run_dir.status()
        if status.state not in RECORDED_ENDS:
            if self.backend.was_cancelled(job):
                status = run_dir.update_status(_cancelled)
            else:
                status = run_dir.update_status(_ended_silently(job))
        self.claims.pop(run_id).release()
        self._done(run_id, status.state)

    def _check_followed(self) -> None:
        """Take over how another process ended a run; train here the runs it left unfinished (killed, cancelled
        before this call)."""
        for run_id, (run, before) in list(self.followed.items()):
            run_dir = self.run_dirs[run_id]
            if run_dir.is_busy():
                continue
            del self.followed[run_id]
            status = run_dir.status()
            if run_dir.metrics() is not None:
                self._done(run_id, RunState.FINISHED)
            elif status != before and status.state in ENDED_STATES:
                self._done(run_id, status.state)
            else:
                self.waiting.append(run)

    def _done(self, run_id: str, state: RunState) -> None:
        """Count the run as ended and print its status line (metrics or error) above the bar."""
        self.states[run_id] = state
        if self.show_runs:
            self.bar.write(status_line(self.run_dirs[run_id]))
        self.bar.update()

    def _show_summary(self) -> None:
        """Counts beside the bar, redrawn only when they change (a log file gets one line per change)."""
        ended = list(self.states.values())
        summary = (f"running {len(self.active)}, waiting {len(self.waiting) + len(self.followed)}, "
                   f"finished {ended.count(RunState.FINISHED)}, failed {ended.count(RunState.FAILED)}, "
                   f"cancelled {ended.count(RunState.CANCELLED)}")
        if summary != self.shown_summary:
            self.bar.set_postfix_str(summary)
            self.shown_summary = summary


def _queued(status: RunStatus) -> None:
    status.state = RunState.QUEUED


def _cancelled(status: RunStatus) -> None:
    status.state = RunState.CANCELLED
    status.end_attempt(RunState.CANCELLED)


def _ended_silently(job: submitit.Job[Any]) -> Callable[[RunStatus], None]:
    """A status change for a job that ended (crashed, killed) without recording a result."""
    stderr = job.stderr() or ""

    def failed(status: RunStatus) -> None:
        status.state = RunState.FAILED
        status.error = f"job {job.job_id} ended in state {job.state} without recording a result"
        status.log_tail = stderr.splitlines()[-LOG_TAIL_LINES:]
        status.end_attempt(RunState.FAILED)

    return failed
