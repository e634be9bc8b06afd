"""A run's manifest: what trained it, where, with which code and packages, and from which iteration."""
from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from tsd_study.resources import checkout

from .spec import RunSpec

PACKAGES = ("torch", "mmcv", "mmdet", "mmengine", "tsd-study")
GIT_TIMEOUT_S = 10


def build_manifest(spec: RunSpec, *, executor: str, job_id: str | None, device: str, started_at: str,
                   start_iter: int, recipe_digest: str | None = None) -> dict[str, Any]:
    """The manifest of an attempt that starts now; ``ended_at`` is filled in when it finishes. ``recipe_digest``
    (``config_loading.recipe_digest``) is, at the start, that of the checkpoint the attempt resumes (None for a
    fresh start), and that of the config it trains once it has loaded the config."""
    return {
        "spec": spec.to_dict(),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "host": socket.gethostname(),
        "device": device,
        "executor": executor,
        "slurm_job_id": job_id if executor == "slurm" else None,
        "started_at": started_at,
        "ended_at": None,
        "start_iter": start_iter,
        "recipe_digest": recipe_digest,
    }


def package_versions() -> dict[str, str | None]:
    """Python and the packages a result depends on (None for one that is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit() -> str | None:
    """HEAD of the git checkout tsd_study runs from, suffixed ``-dirty`` with uncommitted changes; None for an
    installed package (its version is in ``versions``), also one installed inside another git repository."""
    repository = checkout()
    if repository is None:
        return None
    try:
        head = _git(repository, "rev-parse", "HEAD")
        changes = _git(repository, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if changes else head


def _git(repository: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repository), *args], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT_S).stdout.strip()
