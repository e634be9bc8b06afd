"""What a training job reads from its environment: where it runs, its thread budget, the checkpoint to resume from,
and the word task 0 of a distributed job gives the others.

A leaf of the launch package (no torch, no mmdetection, nothing of the executors or the training): the launcher
sets what the job process reads here.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
from filelock import FileLock, Timeout

from tsd_study.atomic import write_json_atomic

THREADS_VARIABLE = "TSD_STUDY_THREADS"  # the torch threads of a job: set by the executors, read by the training
GATE_BEAT_S = 30.0  # task 0 rewrites its gate file this often while it waits for the run's lock
GATE_SILENCE_S = 600.0  # the other tasks give up after this long without a word or a beat from task 0
GATE_POLL_S = 0.5
TRAIN, FINISHED, FAILED = "train", "finished", "failed"


@dataclass(frozen=True)
class JobContext:
    """Where this process runs: the submitit executor (``direct`` outside submitit), job id and task rank."""

    executor: str
    job_id: str | None
    rank: int
    num_tasks: int
    hostnames: tuple[str, ...]

    @classmethod
    def current(cls) -> JobContext:
        executor = os.environ.get("SUBMITIT_EXECUTOR")
        if not executor:
            return cls("direct", None, 0, 1, (socket.gethostname(),))
        environment = submitit.JobEnvironment()
        return cls(executor, environment.job_id, environment.global_rank, environment.num_tasks,
                   tuple(environment.hostnames))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def attempt(self) -> str:
        """This attempt of the job: its id and how many times SLURM requeued it (the id survives a requeue)."""
        return f"{self.job_id}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"


@dataclass(frozen=True)
class TaskGate:
    """Task 0's word to the other tasks of its distributed job on whether to train the run.

    Task 0 takes the run's lock first, which lasts as long as another job trains the run (hours, if it does). The other
    tasks must not meanwhile enter the distributed rendezvous, which fails after its timeout (30 minutes by default):
    they wait here, with no time limit, for the word task 0 writes into the gate file of this attempt
    (``.gate-<attempt>.json`` in the run directory): ``train`` (it holds the lock and has started an attempt),
    ``finished`` (the run was finished meanwhile) or ``failed``. While task 0 waits for the lock it rewrites the file
    every ``beat_s``; the other tasks give up only when the file has not changed for ``silence_s`` (task 0 died).
    """

    path: Path
    beat_s: float = GATE_BEAT_S
    silence_s: float = GATE_SILENCE_S
    poll_s: float = GATE_POLL_S

    @classmethod
    def of(cls, run_dir: Path, context: JobContext) -> TaskGate:
        return cls(Path(run_dir) / f".gate-{re.sub(r'[^A-Za-z0-9_.-]', '_', context.attempt)}.json")

    def acquire(self, lock: FileLock) -> None:
        """Task 0: acquire ``lock``, beating the gate file meanwhile."""
        beats = 0
        while True:
            write_json_atomic(self.path, {"word": "waiting", "beats": beats})
            try:
                lock.acquire(timeout=self.beat_s)
                return
            except Timeout:
                beats += 1

    def announce(self, word: str) -> None:
        """Task 0: tell the other tasks to ``train``, that the run is ``finished``, or that task 0 ``failed``."""
        write_json_atomic(self.path, {"word": word})

    def wait(self) -> str:
        """The other tasks: task 0's word, ``train`` or ``finished``; RuntimeError if it failed or fell silent."""
        seen, changed = None, time.monotonic()
        while True:
            try:
                content = json.loads(self.path.read_text())
            except (OSError, ValueError):  # not written yet
                content = None
            if content != seen:
                seen, changed = content, time.monotonic()
            word = content.get("word") if isinstance(content, dict) else None
            if word in (TRAIN, FINISHED):
                return word
            if word == FAILED:
                raise RuntimeError(f"{self.path}: task 0 failed before training (its log says why)")
            if time.monotonic() - changed > self.silence_s:
                raise RuntimeError(f"{self.path}: no word from task 0 for {self.silence_s:.0f} s; is it alive?")
            time.sleep(self.poll_s)
