"""SLURM site profiles (``cluster/sites/<name>.yaml``, packaged as ``tsd_study/sites/``): where and with which
resources the study submits its jobs.

cluster/sites/gpu-cluster.example.yaml documents every key.
"""
from __future__ import annotations

import math
import os
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from tsd_study.resources import sites_dir

SITES_DIR = sites_dir()
MIN_TIME_MIN = 2  # submitit needs this much to checkpoint before a time limit
SINFO_TIMEOUT_S = 30
DEFAULT_MAX_REQUEUES = 100  # submitit's own default (3) would end a 13-epoch run after its fourth time limit
DEFAULT_POLL_S = 30.0  # how often the launcher asks SLURM (sacct) about its jobs


class SiteError(ValueError):
    """A site profile that cannot be used, or a cluster that cannot be reached; names the file or command."""


@dataclass(frozen=True)
class Site:
    """A SLURM site profile; see cluster/sites/gpu-cluster.example.yaml for the meaning of each key."""

    name: str
    partition: str
    nodes_max: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float
    time_min: int
    account: str | None
    qos: str | None
    constraint: str | None
    max_concurrent: int
    setup: tuple[str, ...]
    slurm_conf: str | None = None
    max_requeues: int = DEFAULT_MAX_REQUEUES
    poll_s: float = DEFAULT_POLL_S
    cuda_arch_list: str | None = None
    source: str = ""

    def environment(self) -> dict[str, str]:
        """Variables SLURM's commands need for this site (SLURM_CONF when the profile names one)."""
        return {"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {}

    def gpu_layout(self, gpus: int) -> tuple[int, int]:
        """(nodes, GPUs per node) for a run that wants ``gpus`` GPUs; SiteError if the site cannot hold it."""
        if self.gpus_per_node == 0:
            raise SiteError(f"{self.source}: site {self.name!r} has no GPUs (gpus_per_node: 0), a run wants {gpus}")
        nodes = math.ceil(gpus / self.gpus_per_node)
        if nodes > self.nodes_max:
            raise SiteError(f"{self.source}: a run wants {gpus} GPUs = {nodes} nodes of {self.gpus_per_node}, "
                            f"more than nodes_max: {self.nodes_max}")
        return nodes, math.ceil(gpus / nodes)


_OPTIONAL = {"slurm_conf", "max_requeues", "poll_s", "cuda_arch_list"}
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "partition": (str,), "nodes_max": (int,), "gpus_per_node": (int,), "cpus_per_task": (int,),
    "mem_gb": (int, float), "time_min": (int,), "account": (str, type(None)), "qos": (str, type(None)),
    "constraint": (str, type(None)), "max_concurrent": (int,), "setup": (list,), "slurm_conf": (str,),
    "max_requeues": (int,), "poll_s": (int, float), "cuda_arch_list": (str,),
}
_MINIMUM = {"nodes_max": 1, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 0.1, "time_min": MIN_TIME_MIN,
            "max_concurrent": 1, "max_requeues": 0, "poll_s": 1}


def site_file(site: str | Path) -> Path:
    """A site profile file from a path, or from a name under ``SITES_DIR``."""
    path = Path(site)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise SiteError(f"{path}: no such site profile")
        return path
    named = SITES_DIR / f"{site}.yaml"
    if not named.is_file():
        known = sorted(file.stem for file in SITES_DIR.glob("*.yaml"))
        raise SiteError(f"unknown site {str(site)!r}: no {named}; known: {', '.join(known)}; "
                        f"or give the path of a yaml file")
    return named


def load_site(site: str | Path) -> Site:
    """Read and validate a site profile; errors name the file and every missing, unknown or bad key."""
    path = site_file(site)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SiteError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise SiteError(f"{path}: a site profile is a mapping of keys to values")
    problems = _problems(data)
    if problems:
        raise SiteError(f"{path}: " + "; ".join(problems))
    return Site(**{**data, "setup": tuple(data["setup"]), "source": str(path)})


def _problems(data: dict[str, Any]) -> list[str]:
    required = [spec.name for spec in fields(Site) if spec.name not in _OPTIONAL | {"source"}]
    problems = [f"missing key {key!r}" for key in required if key not in data]
    problems += [f"unknown key {key!r} (known: {', '.join(_KEY_TYPES)})" for key in data if key not in _KEY_TYPES]
    problems += [problem for key, value in data.items() if key in _KEY_TYPES
                 if (problem := _value_problem(key, value)) is not None]
    return problems


def _value_problem(key: str, value: Any) -> str | None:
    types = _KEY_TYPES[key]
    if not _has_type(value, types):
        return f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {value!r}"
    if key in _MINIMUM and value < _MINIMUM[key]:
        return f"{key}: must be at least {_MINIMUM[key]}, got {value!r}"
    if key == "setup" and not all(isinstance(line, str) for line in value):
        return f"setup: expected a list of shell lines, got {value!r}"
    return None


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that YAML's booleans are not integers."""
    return isinstance(value, types) and not isinstance(value, bool)


def check_reachable(site: Site) -> None:
    """Ask SLURM (sinfo) for the site's partition; SiteError when SLURM does not answer or lacks the partition."""
    if site.slurm_conf and not Path(site.slurm_conf).is_file():  # sinfo would retry for a minute
        raise SiteError(f"{site.source}: slurm_conf: {site.slurm_conf} does not exist (is the cluster set up? "
                        f"cluster/local-slurm start creates the local one)")
    command = ["sinfo", "--noheader", "--partition", site.partition, "--format=%P %a"]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S,
                                env={**os.environ, **site.environment()})
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SiteError(f"SLURM is not reachable for site {site.name!r} ({site.source}): {' '.join(command)}: "
                        f"{error}") from None
    if answer.returncode != 0:
        raise SiteError(f"SLURM is not reachable for site {site.name!r} ({site.source}): {' '.join(command)} "
                        f"exited with {answer.returncode}: {answer.stderr.strip()}")
    if not answer.stdout.strip():
        raise SiteError(f"{site.source}: partition {site.partition!r} does not exist on this cluster")
