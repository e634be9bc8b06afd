"""The `local_slurm` session fixture: a real single-node SLURM cluster started by cluster/local-slurm."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

LOCAL_SLURM = Path(__file__).resolve().parents[1] / "cluster" / "local-slurm"
EXIT_UNSUPPORTED = 3  # local-slurm's exit status when this machine cannot host the cluster
COLD_START_TIMEOUT_S = 900  # the first start installs the Debian packages
COMMAND_TIMEOUT_S = 120
CLUSTER_PROCESS_NAMES = frozenset({"munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "slurmstepd"})
JOB_TIMEOUT_S = 120  # every wait is bounded: a broken cluster fails a test after this long
POLL_S = 0.5


@dataclass(frozen=True)
class LocalSlurm:
    """A running local cluster: its state directory and the environment SLURM commands need."""

    state_dir: Path
    env: dict[str, str]

    @property
    def slurm_conf(self) -> Path:
        return Path(self.env["SLURM_CONF"])

    def script(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Runs `local-slurm ARGS` without raising on a non-zero exit status."""
        return subprocess.run(
            [str(LOCAL_SLURM), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )

    def command(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        """Runs a SLURM command (sbatch, sacct, ...) against this cluster and returns its stdout."""
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=True).stdout


def slurm_conf_of(script_env: dict[str, str]) -> Path:
    """The SLURM_CONF that `local-slurm env` prints for this environment (TSD_SLURM_DIR or the default)."""
    printed = subprocess.run(
        [str(LOCAL_SLURM), "env"], env=script_env, capture_output=True, text=True, check=True
    ).stdout
    prefix = "export SLURM_CONF="
    if not printed.startswith(prefix):
        raise ValueError(f"{LOCAL_SLURM} env printed {printed!r}, expected a line starting with {prefix!r}")
    return Path(printed.removeprefix(prefix).strip())


def cluster_processes(state_dir: Path) -> list[str]:
    """'pid name' of each live daemon or job step whose command line, working directory or open file is in state_dir.

    slurmstepd overwrites its command line and environment, but keeps slurmd's log file open.
    """
    found = []
    for proc in Path("/proc").iterdir():
        name = _live_process_name(proc)
        if name in CLUSTER_PROCESS_NAMES and any(f"{state_dir}/" in place for place in _process_places(proc)):
            found.append(f"{proc.name} {name}")
    return found


def _live_process_name(proc: Path) -> str | None:
    """The command name of /proc/PID; None for other entries, zombies and processes that have ended."""
    if not proc.name.isdigit():
        return None
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    name_end = stat.rindex(")")
    return None if stat[name_end + 2] == "Z" else stat[stat.index("(") + 1 : name_end]


def _process_places(proc: Path) -> list[str]:
    """The command line, working directory and open files of a process, less what vanished while we looked."""
    try:
        places = [(proc / "cmdline").read_bytes().decode(errors="replace")]
        links = [proc / "cwd", *(proc / "fd").iterdir()]
    except OSError:
        return []
    for link in links:
        try:
            places.append(os.readlink(link))
        except OSError:
            continue
    return places


def wait_until(done: Callable[[], bool], failure: Callable[[], str], timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Polls `done` until it holds; after timeout_s fails the test with failure()'s message."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout_s:.0f}s: {failure()}")
        time.sleep(POLL_S)


def cancel_jobs_of_an_earlier_session(cluster: LocalSlurm) -> None:
    """Cancels the jobs slurmctld recovered from its state directory and waits until they are gone.

    A session killed before its `stop` (or a machine copied while one ran) leaves jobs in the saved state; when the
    daemons start again SLURM requeues them as after a node reboot and runs them, holding the node.
    """
    job_ids = cluster.command("squeue", "--noheader", "--format=%A").split()
    if not job_ids:
        return
    print(f"local-slurm: cancelling jobs {' '.join(job_ids)} recovered from an earlier session")
    cluster.command("scancel", *job_ids)
    wait_until(lambda: not cluster.command("squeue", "--noheader", "--format=%A").strip(),
               lambda: f"jobs {' '.join(job_ids)} recovered from an earlier session still queued after scancel")


@pytest.fixture(scope="session")
def local_slurm() -> Iterator[LocalSlurm]:
    """Starts the cluster for the test session (skips where it cannot run), stops it at the end."""
    slurm_conf = slurm_conf_of(dict(os.environ))
    cluster = LocalSlurm(state_dir=slurm_conf.parent.parent, env={**os.environ, "SLURM_CONF": str(slurm_conf)})
    started = cluster.script("start", timeout_s=COLD_START_TIMEOUT_S)
    if started.returncode == EXIT_UNSUPPORTED:
        pytest.skip(f"no local SLURM cluster on this machine: {started.stderr.strip()}")
    if started.returncode != 0:
        pytest.fail(f"local-slurm start failed ({started.returncode}):\n{started.stderr}")
    cancel_jobs_of_an_earlier_session(cluster)
    yield cluster
    stopped = cluster.script("stop")
    assert stopped.returncode == 0, f"local-slurm stop failed:\n{stopped.stderr}"
    assert cluster_processes(cluster.state_dir) == [], "local-slurm stop left processes behind"
