"""What a training job reads from its environment: where it runs, its thread budget, the checkpoint to resume from.

A leaf of the launch package (no torch, no mmdetection, nothing of the executors or the training): the launcher
sets what the job process reads here.
"""
from __future__ import annotations

import os
import re
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import submitit

THREADS_VARIABLE = "TSD_STUDY_THREADS"  # the torch threads of a job: set by the executors, read by the training
CHECKPOINT_PATTERN = re.compile(r"iter_(\d+)\.pth")


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
