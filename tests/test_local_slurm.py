"""The real local SLURM cluster from cluster/local-slurm, driven by SLURM's commands and by submitit."""

from __future__ import annotations

import math
import operator
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import cloudpickle
import pytest
import submitit
import yaml

from slurm_fixtures import JOB_TIMEOUT_S, LOCAL_SLURM, LocalSlurm, cluster_processes, slurm_conf_of, wait_until

pytestmark = pytest.mark.slurm

LOCAL_PROFILE = LOCAL_SLURM.parent / "sites" / "local.yaml"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
R = TypeVar("R")
UNFINISHED_STATES = {"", "PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "SUSPENDED"}


def daemon_lines(status_stdout: str) -> dict[str, str]:
    """Maps each daemon to the rest of its `local-slurm status` line."""
    lines = dict(line.split(maxsplit=1) for line in status_stdout.splitlines() if line.split(" ", 1)[0] in DAEMONS)
    assert sorted(lines) == sorted(DAEMONS), status_stdout
    return lines


def sacct_job(cluster: LocalSlurm, job_id: str, fields: str = "State,ExitCode") -> list[str]:
    """The sacct record of a job (allocation only) as a list of field values."""
    out = cluster.command("sacct", "--noheader", "--parsable2", "--allocations", "-j", job_id, "-o", fields)
    return out.strip().splitlines()[0].split("|") if out.strip() else [""]


def wait_for_sacct_end(cluster: LocalSlurm, job_id: str) -> list[str]:
    """Polls sacct until the job has ended; returns its State and ExitCode."""
    wait_until(
        lambda: sacct_job(cluster, job_id)[0] not in UNFINISHED_STATES,
        lambda: f"job {job_id} is still {sacct_job(cluster, job_id)[0] or 'unknown to sacct'}",
    )
    return sacct_job(cluster, job_id)


def result_within_timeout(job: submitit.Job[R]) -> R:
    """job.result(), but failing the test when the job has not finished after JOB_TIMEOUT_S."""
    wait_until(lambda: job.done(force_check=True), lambda: f"submitit job {job.job_id} is still {job.state}")
    return job.result()


def wait_for_state(job: submitit.Job[Any], wanted: str) -> None:
    """Polls sacct (through submitit's watcher) until the job's state starts with `wanted` ("CANCELLED by 0")."""
    wait_until(
        lambda: job.watcher.get_state(job.job_id, mode="force").startswith(wanted),
        lambda: f"submitit job {job.job_id} is {job.state}, not {wanted}",
    )


@pytest.fixture(scope="module")
def local_profile() -> dict[str, Any]:
    profile: dict[str, Any] = yaml.safe_load(LOCAL_PROFILE.read_text())
    return profile


@pytest.fixture
def executor(
    local_slurm: LocalSlurm, local_profile: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> submitit.SlurmExecutor:
    """A submitit SlurmExecutor with local.yaml's resources, submitting with this venv's python."""
    monkeypatch.setenv("SLURM_CONF", str(local_slurm.slurm_conf))
    slurm_executor = submitit.SlurmExecutor(folder=tmp_path / "submitit", python=sys.executable)
    slurm_executor.update_parameters(
        partition=local_profile["partition"],
        cpus_per_task=local_profile["cpus_per_task"],
        mem=f"{local_profile['mem_gb']}G",
        time=local_profile["time_min"],
        array_parallelism=local_profile["max_concurrent"],
        setup=local_profile["setup"],
    )
    return slurm_executor


class CountsItsStarts(submitit.helpers.Checkpointable):
    """Returns how often it was started; its first start touches `started` and waits to be preempted."""

    def __init__(self) -> None:
        self.starts = 0

    def __call__(self, started: Path) -> int:
        self.starts += 1
        if self.starts == 1:
            started.touch()
            time.sleep(JOB_TIMEOUT_S)
        return self.starts


def test_status_shows_every_daemon_running_and_the_node_idle(local_slurm: LocalSlurm) -> None:
    """The node turns idle once no job holds it (a job of an earlier test may still be completing)."""
    def idle() -> bool:
        return re.search(r"^local\*\s+up\s+infinite\s+1\s+idle\s", local_slurm.script("status").stdout,
                         re.MULTILINE) is not None

    wait_until(idle, lambda: f"the node is not idle: {local_slurm.script('status').stdout}"
                             f"{local_slurm.command('squeue', '--all')}")
    status = local_slurm.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(re.fullmatch(r"running \(pid \d+\)", rest) for rest in daemon_lines(status.stdout).values())


def test_start_when_running_is_a_fast_no_op(local_slurm: LocalSlurm) -> None:
    before = daemon_lines(local_slurm.script("status").stdout)
    began = time.monotonic()
    started = local_slurm.script("start")
    elapsed_s = time.monotonic() - began
    assert started.returncode == 0, started.stderr
    assert started.stdout == f"export SLURM_CONF={local_slurm.slurm_conf}\n"
    assert elapsed_s < 5
    assert daemon_lines(local_slurm.script("status").stdout) == before


def test_start_repairs_a_stopped_daemon(local_slurm: LocalSlurm) -> None:
    os.kill(int((local_slurm.state_dir / "run" / "slurmd.pid").read_text()), signal.SIGTERM)
    wait_until(
        lambda: daemon_lines(local_slurm.script("status").stdout)["slurmd"] == "stopped",
        lambda: "slurmd still runs after SIGTERM",
        timeout_s=30,
    )

    started = local_slurm.script("start")

    assert started.returncode == 0, started.stderr
    assert "starting slurmd" in started.stderr and "starting slurmctld" not in started.stderr
    assert local_slurm.script("status").returncode == 0


def test_sbatch_job_is_completed_in_accounting(local_slurm: LocalSlurm, tmp_path: Path) -> None:
    job_id = local_slurm.command(
        "sbatch", "--parsable", f"--chdir={tmp_path}", "--output=%j.out", "--wrap", "echo hello from slurm"
    ).strip()
    assert wait_for_sacct_end(local_slurm, job_id) == ["COMPLETED", "0:0"]
    assert (tmp_path / f"{job_id}.out").read_text() == "hello from slurm\n"


def test_local_profile_fits_the_cluster(local_slurm: LocalSlurm, local_profile: dict[str, Any]) -> None:
    default_env = {key: value for key, value in os.environ.items() if key != "TSD_SLURM_DIR"}
    assert Path(local_profile["slurm_conf"]) == slurm_conf_of(default_env)
    partition, cpus, memory_mb = local_slurm.command(
        "sinfo", "--noheader", "--partition", local_profile["partition"], "--format=%R %c %m"
    ).split()
    assert partition == local_profile["partition"]
    # max_concurrent jobs with the profile's resources must fit on the node at the same time
    assert local_profile["max_concurrent"] * local_profile["cpus_per_task"] <= int(cpus)
    assert local_profile["max_concurrent"] * local_profile["mem_gb"] * 1024 <= int(memory_mb)


def test_submitit_job_returns_its_result(executor: submitit.SlurmExecutor) -> None:
    job = executor.submit(operator.add, 2, 3)
    assert result_within_timeout(job) == 5


def test_submitit_failed_job_raises_with_the_original_traceback(executor: submitit.SlurmExecutor) -> None:
    job = executor.submit(math.sqrt, -1.0)
    with pytest.raises(submitit.core.utils.FailedJobError) as failure:
        result_within_timeout(job)
    assert "Traceback (most recent call last)" in str(failure.value)
    assert "ValueError: math domain error" in str(failure.value)


def test_submitit_cancel_is_cancelled_in_submitit_and_sacct(
    executor: submitit.SlurmExecutor, local_slurm: LocalSlurm
) -> None:
    job = executor.submit(time.sleep, JOB_TIMEOUT_S)
    wait_for_state(job, "RUNNING")
    job.cancel()
    wait_for_state(job, "CANCELLED")
    assert job.done()
    assert sacct_job(local_slurm, job.job_id, "State")[0].startswith("CANCELLED")
    # submitit ignores SIGTERM, so the job ends only after KillWait; the next test needs the node free
    wait_until(
        lambda: not local_slurm.command("squeue", "--noheader", "--jobs", job.job_id).strip(),
        lambda: f"job {job.job_id} is still in the queue",
    )


def test_map_array_submits_one_job_array(executor: submitit.SlurmExecutor) -> None:
    jobs = executor.map_array(operator.mul, [1, 2, 3], [4, 5, 6])
    (array_id,) = {job.job_id.split("_")[0] for job in jobs}
    assert sorted(job.job_id for job in jobs) == [f"{array_id}_{task}" for task in range(3)]
    assert [result_within_timeout(job) for job in jobs] == [4, 10, 18]


def test_preempted_checkpointable_job_is_requeued_and_resumes(
    executor: submitit.SlurmExecutor, local_slurm: LocalSlurm, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    this_module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(this_module)  # the job's python cannot import this test module
    try:
        job = executor.submit(CountsItsStarts(), started)
    finally:
        cloudpickle.unregister_pickle_by_value(this_module)
    wait_until(started.exists, lambda: f"the job did not start: no {started}")
    # a preemption as submitit's own test helper makes one: SIGTERM (submitit ignores it), then its USR2 warning
    for signal_name in ("TERM", "USR2"):
        local_slurm.command("scancel", f"--signal={signal_name}", job.job_id)

    assert result_within_timeout(job) == 2
    assert wait_for_sacct_end(local_slurm, job.job_id) == ["COMPLETED", "0:0"]
    states = local_slurm.command(
        "sacct", "--noheader", "--parsable2", "--allocations", "--duplicates", "-j", job.job_id, "-o", "State"
    ).split()
    assert states == ["REQUEUED", "COMPLETED"]


def test_stop_ends_every_process_and_start_brings_the_cluster_back(local_slurm: LocalSlurm) -> None:
    try:
        stopped = local_slurm.script("stop")
        assert stopped.returncode == 0, stopped.stderr
        status = local_slurm.script("status")
        assert status.returncode != 0
        assert set(daemon_lines(status.stdout).values()) == {"stopped"}
        assert cluster_processes(local_slurm.state_dir) == []
    finally:
        restarted = local_slurm.script("start")
    assert restarted.returncode == 0, restarted.stderr
