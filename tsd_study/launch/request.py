"""One request to run studies, from the command line or a notebook's parameters, and the one function that runs it.

``tsd-study study run``, ``tsd-study reproduce`` and the study notebooks each build a :class:`StudyRequest` and call
:func:`run_study`, so they plan, launch and pass the site profile the same way.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsd_study.runs.plan import DEFAULT_SEEDS, Plan, plan
from tsd_study.runs.stale import check_not_stale
from tsd_study.runs.store import RunState, RunStore
from tsd_study.studies.profiles import Profile, get_profile, study_profile

from .executors import check_executor, make_backend, run_plan


@dataclass(frozen=True)
class StudyRequest:
    """What to run: the profile (with ``dataset`` in place of its own when given), the seeds, the run store (None:
    ``default_store()``), the executor with its SLURM site profile (slurm only), jobs at a time (None: the
    executor's default), whether finished runs are reused (False retrains them from scratch), whether runs
    trained from another version of their config are retrained (``runs.stale``; without it they stop the request)
    and whether anything is launched at all (False reports the runs the store already holds, e.g. while a cluster
    still trains the rest).

    Every field is checked on construction; a bad one is a one-line ValueError that starts with its name.
    """

    profile: str
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    store: Path | None = None
    executor: str = "local"
    site: str | None = None
    max_concurrent: int | None = None
    reuse: bool = True
    dataset: str | None = None
    launch: bool = True
    retrain_stale: bool = False

    def __post_init__(self) -> None:
        try:
            get_profile(self.profile)
        except (ValueError, TypeError) as error:
            raise ValueError(f"profile: {error}") from None
        if not (isinstance(self.seeds, tuple) and self.seeds and all(type(seed) is int for seed in self.seeds)
                and len(set(self.seeds)) == len(self.seeds)):
            raise ValueError(f"seeds: expected distinct integers such as [0, 1, 2], got {self.seeds!r}")
        if self.store is not None and not isinstance(self.store, Path):
            raise ValueError(f"store: expected a path or None, got {self.store!r}")
        check_executor(self.executor, self.site, self.max_concurrent)
        for name in ("reuse", "launch", "retrain_stale"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if not (self.reuse or self.launch):
            raise ValueError("reuse: False retrains runs, which needs launch=True")
        if self.retrain_stale and not self.launch:
            raise ValueError("retrain_stale: True retrains runs, which needs launch=True")
        if self.dataset is not None and not isinstance(self.dataset, str):
            raise ValueError(f"dataset: expected a dataset reference or None, got {self.dataset!r}")

    @classmethod
    def from_parameters(cls, *, profile: str = "cpu", executor: str = "local", site: str | None = None,
                        seeds: int | Sequence[int] = DEFAULT_SEEDS, dataset: str | None = None,
                        store: Path | str | None = None, reuse: bool = True,
                        max_concurrent: int | None = None, launch: bool = True) -> StudyRequest:
        """From a notebook's parameters cell (the defaults are its defaults): ``seeds`` one integer or a list of
        them, ``store`` a path string or None."""
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if isinstance(seeds, str | bytes) or not isinstance(seeds, Sequence):
            raise ValueError(f"seeds: expected an integer or a list of integers such as [0, 1, 2], got {seeds!r}")
        return cls(profile=profile, seeds=tuple(seeds), store=Path(store) if isinstance(store, str) else store,
                   executor=executor, site=site, max_concurrent=max_concurrent, reuse=reuse, dataset=dataset,
                   launch=launch)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StudyRequest:
        """From ``tsd-study study run`` or ``tsd-study reproduce``: seeds parsed already, ``--force`` (where the
        command has it) means no reuse, ``--no-launch`` (where it has it) launches nothing."""
        return cls(profile=args.profile, seeds=args.seeds, store=args.store, executor=args.executor, site=args.site,
                   max_concurrent=args.max_concurrent, reuse=not getattr(args, "force", False),
                   launch=not getattr(args, "no_launch", False), retrain_stale=args.retrain_stale)

    @property
    def resolved_profile(self) -> Profile:
        """The profile, with the request's dataset when it names one."""
        return study_profile(self.profile, self.dataset)

    @property
    def run_store(self) -> RunStore:
        """The run store (``default_store()`` when the request names none)."""
        return RunStore(self.store)

    def parameters(self) -> dict[str, Any]:
        """The request as a notebook's parameters (seeds a list, store a string or None), for papermill."""
        return dict(profile=self.profile, executor=self.executor, site=self.site, seeds=list(self.seeds),
                    dataset=self.dataset, store=None if self.store is None else str(self.store), reuse=self.reuse,
                    max_concurrent=self.max_concurrent, launch=self.launch)


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did: the plan, each run's final state, and how many jobs ran at a time at most."""

    plan: Plan
    states: dict[str, RunState]
    max_concurrent: int

    @property
    def unfinished(self) -> dict[str, RunState]:
        """The runs that did not finish, with their states."""
        return {run_id: state for run_id, state in self.states.items() if state != RunState.FINISHED}


def run_study(request: StudyRequest, studies: Sequence[str], *, progress: bool = True, show_runs: bool = False,
              expected_s: Mapping[str, float] | None = None) -> StudyRun:
    """Plan the runs ``studies`` need (each distinct run once) and train those not finished (every one unless
    ``request.reuse``) with the request's executor, waiting for them; with ``request.launch`` False, only read each
    run's state from the store.

    ``progress`` shows the engine's progress bar; ``show_runs`` prints each run's metrics as it ends; ``expected_s``
    (seconds by run id, e.g. from an earlier report) submits the longest runs first.
    """
    store = request.run_store
    if not request.launch:
        planned = plan(list(studies), request.resolved_profile, request.seeds)
        check_not_stale(planned, store)
        return StudyRun(planned, {run.run_id: store.run(run.run_id).state() for run in planned.runs}, 0)
    backend = make_backend(request.executor, store, site=request.site, max_concurrent=request.max_concurrent)
    planned = plan(list(studies), request.resolved_profile, request.seeds)
    submitted = planned.longest_first(expected_s) if expected_s else planned
    states = run_plan(submitted, store, backend, force=not request.reuse, retrain_stale=request.retrain_stale,
                      progress=progress, show_runs=show_runs)
    return StudyRun(planned, states, backend.max_concurrent)
