"""The run store: one directory per run, every file written atomically, a lock per run held while it trains.

Layout of ``<root>/<run_id>/``:
  spec.json                 the RunSpec (its hash is the directory name)
  status.json               state, attempts (start/end, executor job id, iterations), error and log tail
  manifest.json             provenance of the attempt that trained it (versions, host, device, job id, times)
  metrics.json              what the job measured (see METRIC_KEYS); present only for a finished run
  predictions.bbox.json     the val-split detections (and predictions.segm.json for mask models)
  work/                     mmengine's work_dir: checkpoints and logs
  .run.lock                 held by the job that trains the run
  .claim.lock               held by the launcher that submitted that job, until the job ends
  .status.lock              held while status.json is read, changed and written
(fcntl locks through the filelock package: the OS releases them when their process dies)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tsd_study.atomic import write_json_atomic
from tsd_study.metrics import IOU_TYPES, STAT_DEFINITIONS

from .spec import RunSpec

STORE_VARIABLE = "TSD_STUDY_STORE"
PROJECT_MARKERS = ("pyproject.toml", ".git")


class RunState(StrEnum):
    """A run's state; status.json holds its value. INTERRUPTED is never written as a run's state: ``RunDir.state``
    derives it (a run marked RUNNING that no live process trains), and it ends the attempt such a process left open."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


STATES = tuple(RunState)
ENDED_STATES = (RunState.FINISHED, RunState.FAILED, RunState.CANCELLED)
"""States a launcher takes as a run's end; a run INTERRUPTED is trained again."""
REQUEUED = "requeued"
"""The outcome of an attempt checkpointed on preemption or timeout; its run is QUEUED again."""
METRIC_KEYS = ("bbox", "latency_ms", "params_M", "iters", "train_seconds", "eval_seconds")
"""Keys every metrics.json holds; mask models add "segm"."""
DERIVED_PROPOSALS = "derived_proposals.json"
LOG_TAIL_LINES = 40
CHECKPOINT_PATTERN = re.compile(r"iter_(\d+)\.pth")
"""The training's checkpoints in ``work/``: ``iter_<iterations done>.pth``."""
TRAINING_LOCK = ".run.lock"
CLAIM_LOCK = ".claim.lock"
STATUS_LOCK_TIMEOUT_S = 60.0


def default_store() -> Path:
    """The run store of every entry point not given one: $TSD_STUDY_STORE, else ``runs`` in the project root (the
    nearest directory at or above the working directory with pyproject.toml or .git), else ``./runs``."""
    if os.environ.get(STORE_VARIABLE):
        return Path(os.environ[STORE_VARIABLE]).expanduser()
    here = Path.cwd()
    root = next((directory for directory in (here, *here.parents)
                 if any((directory / marker).exists() for marker in PROJECT_MARKERS)), here)
    return root / "runs"


class StoreError(ValueError):
    """A run directory holds something it should not; the message names the file."""


def now() -> str:
    """The current UTC time, ISO 8601 to the second: the format of every time in the store."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Attempt:
    """One execution of a run's job: where it ran and how far it got.

    ``outcome`` is None while it runs, then the RunState finished, failed, cancelled or interrupted (its process died
    without a word, e.g. kill -9), or REQUEUED (checkpointed at ``end_iter`` on preemption or timeout).
    """

    started_at: str
    executor: str
    job_id: str | None
    host: str
    start_iter: int
    ended_at: str | None = None
    outcome: str | None = None
    end_iter: int | None = None


@dataclass
class RunStatus:
    """The content of status.json."""

    state: RunState = RunState.PENDING
    attempts: list[Attempt] = field(default_factory=list)
    uses: list[str] = field(default_factory=list)
    error: str | None = None
    log_tail: list[str] | None = None
    updated_at: str = field(default_factory=now)

    def end_attempt(self, outcome: str, end_iter: int | None = None) -> None:
        """End the last attempt with ``outcome``, unless it has ended already."""
        if self.attempts and self.attempts[-1].outcome is None:
            last = self.attempts[-1]
            last.ended_at, last.outcome, last.end_iter = now(), outcome, end_iter

    def wall_seconds(self) -> float:
        """Seconds the run's jobs spent in it so far: the ended attempts, start to end, summed."""
        return sum((datetime.fromisoformat(attempt.ended_at) - datetime.fromisoformat(attempt.started_at))
                   .total_seconds() for attempt in self.attempts if attempt.ended_at is not None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> RunStatus:
        try:
            status = cls(**{**data, "attempts": [Attempt(**attempt) for attempt in data["attempts"]]})
        except (TypeError, KeyError) as error:
            raise StoreError(f"{source}: not a run status ({error})") from None
        if status.state not in STATES:
            raise StoreError(f"{source}: state {status.state!r} is not one of {', '.join(STATES)}")
        status.state = RunState(status.state)
        return status


def metrics_problems(metrics: Any) -> list[str]:
    """What keeps ``metrics`` from being a complete metrics.json (empty when it is one)."""
    if not isinstance(metrics, dict):
        return [f"expected an object, got {type(metrics).__name__}"]
    problems = [f"missing {key!r}" for key in METRIC_KEYS if key not in metrics]
    for iou_type in IOU_TYPES:
        evaluation = metrics.get(iou_type)
        if evaluation is not None and not (isinstance(evaluation, dict)
                                           and len(evaluation.get("stats", [])) == len(STAT_DEFINITIONS)
                                           and isinstance(evaluation.get("breakdown"), list)):
            problems.append(f"{iou_type!r} is not a COCO evaluation ({len(STAT_DEFINITIONS)} stats and a breakdown)")
    return problems


class RunDir:
    """One run's directory: typed access to its files, its status and its locks."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._status_lock = FileLock(self.path / ".status.lock", timeout=STATUS_LOCK_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def work_dir(self) -> Path:
        return self.path / "work"

    def predictions_file(self, iou_type: str) -> Path:
        return self.path / f"predictions.{iou_type}.json"

    @property
    def derived_proposals_file(self) -> Path:
        """Fig. 5's material, written by TSD runs (see tsd_study.models.derived_proposals)."""
        return self.path / DERIVED_PROPOSALS

    def spec(self) -> RunSpec:
        file = self.path / "spec.json"
        if not file.is_file():
            raise StoreError(f"{file}: missing; {self.path} is not a run directory")
        return RunSpec.from_json(file.read_text(), source=str(file))

    def write_spec(self, spec: RunSpec) -> None:
        """Write spec.json once; a directory whose spec differs from ``spec`` is an error."""
        if spec.run_id != self.run_id:
            raise StoreError(f"{self.path}: spec hashes to {spec.run_id}, not to the directory name")
        if (self.path / "spec.json").is_file():
            if self.spec() != spec:
                raise StoreError(f"{self.path / 'spec.json'}: holds a different spec than {spec.to_json()}")
            return
        write_json_atomic(self.path / "spec.json", spec.to_dict(), indent=2)

    def status(self) -> RunStatus:
        """status.json, or a pending status when the run has none yet."""
        file = self.path / "status.json"
        if not file.is_file():
            return RunStatus()
        return RunStatus.from_dict(_read_json(file), source=str(file))

    def state(self) -> RunState:
        """The run's real state: FINISHED when metrics.json is complete, INTERRUPTED when status.json says RUNNING
        but no live process trains the run or has a job for it, else the state status.json records."""
        if self.metrics() is not None:
            return RunState.FINISHED
        state = self.status().state
        return RunState.INTERRUPTED if state == RunState.RUNNING and not self.is_busy() else state

    def update_status(self, change: Callable[[RunStatus], None]) -> RunStatus:
        """Read, change and write status.json under its lock (launchers and jobs both write it)."""
        with self._status_lock:
            status = self.status()
            change(status)
            status.updated_at = now()
            write_json_atomic(self.path / "status.json", status.to_dict(), indent=2)
        return status

    @property
    def metrics_file(self) -> Path:
        """metrics.json: written once, atomically, as the last act of a finished training job."""
        return self.path / "metrics.json"

    def metrics(self) -> dict[str, Any] | None:
        """metrics.json when it is complete, else None."""
        file = self.metrics_file
        if not file.is_file():
            return None
        metrics = _read_json(file)
        return None if metrics_problems(metrics) else metrics

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        problems = metrics_problems(metrics)
        if problems:
            raise StoreError(f"{self.metrics_file}: refusing incomplete metrics: {'; '.join(problems)}")
        write_json_atomic(self.metrics_file, metrics, indent=2)

    def manifest(self) -> dict[str, Any] | None:
        file = self.path / "manifest.json"
        return _read_json(file) if file.is_file() else None

    def has_trained(self) -> bool:
        """Whether the run holds anything trained: its metrics, or a complete checkpoint in ``work/``."""
        return self.metrics() is not None or latest_checkpoint(self.work_dir)[0] is not None

    def trained_recipe(self) -> str | None:
        """The recipe digest of the config the run was trained from, as its training recorded it; None before it
        recorded one (and for runs trained before digests were recorded)."""
        return (self.manifest() or {}).get("recipe_digest")

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self.path / "manifest.json", manifest, indent=2)

    def training_lock(self) -> FileLock:
        """The lock a job holds for a whole training (blocking acquire: waits for another trainer)."""
        return FileLock(self.path / TRAINING_LOCK, poll_interval=0.5)

    def claim(self) -> FileLock | None:
        """The launcher's claim on the run, held from submission until its job ends; None if someone holds it.

        Two launchers of one plan then split its runs instead of submitting each twice.
        """
        claim = FileLock(self.path / CLAIM_LOCK, timeout=0)
        try:
            claim.acquire()
        except Timeout:
            return None
        return claim

    def is_training(self) -> bool:
        """Whether a live process holds the training lock."""
        return not _is_free(self.path / TRAINING_LOCK)

    def is_busy(self) -> bool:
        """Whether a live process trains the run, or a live launcher has a job for it."""
        return self.is_training() or not _is_free(self.path / CLAIM_LOCK)

    @contextmanager
    def idle(self) -> Iterator[None]:
        """Hold both locks without waiting, for changes no trainer may see half done (StoreError if busy)."""
        try:
            with FileLock(self.path / CLAIM_LOCK, timeout=0), FileLock(self.path / TRAINING_LOCK, timeout=0):
                yield
        except Timeout:
            raise StoreError(f"{self.path}: the run is being trained by another process") from None

    def discard_results(self) -> None:
        """Forget the training (checkpoints, logs, metrics, predictions, manifest) to retrain from scratch."""
        with self.idle():
            for name in ("metrics.json", "manifest.json", DERIVED_PROPOSALS,
                         *(f"predictions.{iou}.json" for iou in IOU_TYPES)):
                (self.path / name).unlink(missing_ok=True)
            shutil.rmtree(self.work_dir, ignore_errors=True)

            def reset(status: RunStatus) -> None:
                status.state, status.error, status.log_tail = RunState.PENDING, None, None

            self.update_status(reset)


class RunStore:
    """A directory of run directories named by run id (default: ``default_store()``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = default_store() if root is None else Path(root)

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.root / run_id)

    def add(self, spec: RunSpec, uses: tuple[str, ...] = ()) -> RunDir:
        """The run's directory, created with its spec if new; ``uses`` (``study/row``) join those recorded."""
        run = self.run(spec.run_id)
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_spec(spec)

        def add_uses(status: RunStatus) -> None:
            status.uses = sorted(set(status.uses) | set(uses))

        run.update_status(add_uses)
        return run

    def runs(self) -> list[RunDir]:
        """Every run directory (one holding spec.json), sorted by run id."""
        if not self.root.is_dir():
            return []
        return [RunDir(path.parent) for path in sorted(self.root.glob("*/spec.json"))]


def _is_free(lock_file: Path) -> bool:
    try:
        with FileLock(lock_file, timeout=0):
            return True
    except Timeout:
        return False


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise StoreError(f"{file}: not valid JSON ({error.msg} at line {error.lineno})") from None


def latest_checkpoint(work_dir: Path) -> tuple[Path | None, int]:
    """The checkpoint with the most iterations whose file is complete, and that count ((None, 0) without one).

    A process killed while torch wrote a checkpoint leaves a zip without its central directory, which is skipped.
    """
    found = [(int(match.group(1)), path) for path in work_dir.glob("iter_*.pth")
             if (match := CHECKPOINT_PATTERN.fullmatch(path.name))]
    for iteration, path in sorted(found, reverse=True):
        if zipfile.is_zipfile(path):
            return path, iteration
    return None, 0
