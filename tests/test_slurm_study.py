"""Studies through the SLURM executor on the real local cluster (cluster/local-slurm), faults included.

Every test trains on the smoke profile (6 iterations, 48 images) or on a schedule long enough to be stopped while it
trains. Each way SLURM stops a training job (its time limit, a preemption, scontrol requeue, scancel, a killed
process) is followed to the end of the run, which must equal the run trained without a stop: the same iterations,
learning curve and predictions. The module takes about 9 minutes on 2 otherwise idle cores: SLURM requeues a job about
10-25 s after it stops, and the time-limit test waits for SLURM's own signal, which comes 30-90 s into a job with a
2-minute limit.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tsd_study.launch import make_backend, run_plan
from tsd_study.launch.executors import SUBMITIT_DIR, Backend
from tsd_study.launch.sites import SITES_DIR
from tsd_study.runs import Plan, RunDir, RunStore, plan
from tsd_study.runs.store import latest_checkpoint
from tsd_study.studies import Study, parse_study
from tsd_study.studies.profiles import Profile

from slurm_fixtures import LocalSlurm, wait_until
from test_local_slurm import sacct_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TIMEOUT_S = 600
# The stopped runs: a checkpoint and a validation every 6 iterations, about 15 s of training; a stop lands after the
# first checkpoint, with most of the schedule still ahead.
STOPPED_PROFILE = Profile("slurm-stopped", "cpu", "shapes:48", 24, "a schedule to stop half way")
# SLURM's time-limit signal comes 30-90 s into a job with a 2-minute limit: 300 iterations train for longer.
TIME_LIMIT_PROFILE = Profile("slurm-time-limit", "cpu", "shapes:48", 300, "a schedule that outlasts a time limit")
STOPPED_SEEDS = (4,)
URGENT_PARTITION = "urgent"  # cluster/local-slurm: its jobs preempt those of the default partition
STOP_CHECKPOINT = re.compile(r"SIGTERM while SLURM ends this job \(COMPLETING\): checkpoint of iteration (\d+) saved")


def study_of(rows: list[dict[str, Any]], name: str) -> Study:
    """A study that exists only in this test module."""
    return parse_study({"name": name, "title": name, "summary": "a test study", "metrics": ["AP"], "rows": rows,
                        "claims": []}, source=f"{name}.yaml")


def only_row(config: str, name: str, **overrides: Any) -> Study:
    return study_of([{"id": "run", "name": name, "config": config, "overrides": overrides}], name=name)


@pytest.fixture(scope="module")
def site_file(local_slurm: LocalSlurm, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """cluster/sites/local.yaml pointed at the test session's cluster, with some keys changed."""
    folder = tmp_path_factory.mktemp("sites")

    def write(name: str = "local", **changes: Any) -> Path:
        data = yaml.safe_load((SITES_DIR / "local.yaml").read_text())
        data.update(name=name, slurm_conf=str(local_slurm.slurm_conf), **changes)
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


class Launch:
    """run_plan in a background thread, so that a test can interfere with its jobs meanwhile."""

    def __init__(self, planned: Plan, store: RunStore, site: Path | None) -> None:
        """On SLURM with the profile ``site``; without one, with the local executor."""
        self.states: dict[str, str] = {}
        self.error: BaseException | None = None
        backend = make_backend("slurm" if site else "local", store, site=site)
        self.thread = threading.Thread(target=self._run, args=(planned, store, backend), daemon=True)
        self.thread.start()

    def _run(self, planned: Plan, store: RunStore, backend: Backend) -> None:
        try:
            self.states = run_plan(planned, store, backend, progress=False)
        except BaseException as error:  # noqa: BLE001  (re-raised in the test's thread by result())
            self.error = error

    def result(self) -> dict[str, str]:
        self.thread.join(TIMEOUT_S)
        assert not self.thread.is_alive(), f"run_plan still runs after {TIMEOUT_S}s"
        if self.error is not None:
            raise self.error
        return self.states


def the_run(planned: Plan, store: RunStore) -> RunDir:
    (run,) = planned.runs
    return store.run(run.run_id)


def job_id_when_running(run: RunDir, attempts: int = 1) -> str:
    """The SLURM job id of the run's attempt number ``attempts`` once it is running."""
    wait_until(lambda: run.status().state == "running" and len(run.status().attempts) == attempts,
               lambda: f"attempt {attempts} of {run.run_id} is not running: {run.status()}", timeout_s=TIMEOUT_S)
    job_id = run.status().attempts[-1].job_id
    assert job_id is not None
    return job_id


def job_log(store: RunStore, job_id: str) -> str:
    return "".join(path.read_text() for path in (store.root / SUBMITIT_DIR).glob(f"{job_id}_0_log.*"))


@pytest.fixture(scope="module")
def smoke_stores(site_file: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, RunStore]:
    """table2 on the smoke profile through `study run --executor slurm`, and the same through the local executor."""
    slurm_store = RunStore(tmp_path_factory.mktemp("slurm") / "runs")
    finished = subprocess.run([sys.executable, "-m", "tsd_study.cli", "study", "run", "table2", "--profile", "smoke", "--seeds", "0",
                               "--executor", "slurm", "--site", str(site_file()), "--store", str(slurm_store.root),
                               "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    assert f"2 runs in {slurm_store.root}/: 2 finished" in finished.stdout
    local_store = RunStore(tmp_path_factory.mktemp("local") / "runs")
    states = run_plan(plan(["table2"], "smoke", (0,)), local_store, make_backend("local", local_store), progress=False)
    assert set(states.values()) == {"finished"}
    return slurm_store, local_store


def test_the_smoke_study_through_slurm_equals_the_local_executor(smoke_stores: tuple[RunStore, RunStore]) -> None:
    slurm_store, local_store = smoke_stores
    assert [run.run_id for run in slurm_store.runs()] == [run.run_id for run in local_store.runs()]
    for on_slurm, on_local in zip(slurm_store.runs(), local_store.runs(), strict=True):
        slurm_metrics, local_metrics = on_slurm.metrics(), on_local.metrics()
        assert slurm_metrics is not None and local_metrics is not None
        for key in ("bbox", "params_M", "iters"):
            assert slurm_metrics[key] == local_metrics[key]
        assert on_slurm.predictions_file("bbox").read_bytes() == on_local.predictions_file("bbox").read_bytes()
        manifest = on_slurm.manifest()
        assert manifest is not None and manifest["executor"] == "slurm"
        assert manifest["slurm_job_id"] == on_slurm.status().attempts[0].job_id


def test_a_sweep_is_one_job_array(smoke_stores: tuple[RunStore, RunStore], local_slurm: LocalSlurm) -> None:
    slurm_store, _ = smoke_stores
    job_ids = sorted(run.status().attempts[0].job_id or "" for run in slurm_store.runs())
    array_id = job_ids[0].split("_")[0]
    assert job_ids == [f"{array_id}_0", f"{array_id}_1"]
    assert sacct_job(local_slurm, job_ids[0], "JobID,State") == [job_ids[0], "COMPLETED"]
    script = (slurm_store.root / SUBMITIT_DIR / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --requeue" in script


def test_a_failing_run_is_recorded_and_the_others_complete(site_file: Callable[..., Path], store: RunStore) -> None:
    mixed = study_of([
        {"id": "broken", "name": "unknown RPN head", "config": "faster_rcnn",
         "overrides": {"model.rpn_head.type": "NoSuchHead"}},
        {"id": "fine", "name": "the baseline", "config": "faster_rcnn"},
    ], name="mixed")
    planned = plan([mixed], "smoke", (0,))
    broken, fine = (store.run(run.run_id) for run in planned.runs)

    states = run_plan(planned, store, make_backend("slurm", store, site=site_file()), progress=False)

    assert states == {broken.run_id: "failed", fine.run_id: "finished"}
    status = broken.status()
    assert "KeyError" in (status.error or "") and "NoSuchHead" in (status.error or "")
    assert status.log_tail and len(status.log_tail) <= 40
    assert status.attempts[-1].outcome == "failed"
    assert fine.metrics() is not None


def stopped_plan(profile: Profile) -> Plan:
    return plan([only_row("tsd_nopc", "stopped")], profile, STOPPED_SEEDS)


def train_uninterrupted(profile: Profile, root: Path) -> tuple[Launch, RunDir]:
    """The stopped runs' schedule trained without a stop, with the local executor (one torch thread, as a job of
    the local site: the smoke study's runs are byte for byte the same either way); the launch and its run."""
    planned, store = stopped_plan(profile), RunStore(root / "runs")
    return Launch(planned, store, site=None), the_run(planned, store)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    launch, run = train_uninterrupted(STOPPED_PROFILE, tmp_path_factory.mktemp("uninterrupted"))
    assert launch.result() == {run.run_id: "finished"}
    return run


def assert_trained_as(run: RunDir, uninterrupted_run: RunDir) -> None:
    """The run ended as the uninterrupted one: as many iterations, the same learning curve, AP and predictions."""
    metrics, expected = run.metrics(), uninterrupted_run.metrics()
    assert metrics is not None and expected is not None
    assert metrics["iters"] == expected["iters"]
    assert metrics["curve"] == expected["curve"]
    assert metrics["bbox"]["stats"] == expected["bbox"]["stats"]
    assert run.predictions_file("bbox").read_bytes() == uninterrupted_run.predictions_file("bbox").read_bytes()


def checkpointed(run: RunDir) -> int:
    """The iterations of the run's newest complete checkpoint, once it has one past iteration 0."""
    wait_until(lambda: latest_checkpoint(run.work_dir)[1] > 0, lambda: f"{run.run_id} saved no checkpoint",
               timeout_s=TIMEOUT_S)
    return latest_checkpoint(run.work_dir)[1]


def test_a_run_at_its_time_limit_is_requeued_and_ends_as_an_uninterrupted_run(
        site_file: Callable[..., Path], tmp_path: Path) -> None:
    """SLURM's own signal ahead of the time limit: checkpoint, requeue, resume, as often as the limit comes."""
    planned = stopped_plan(TIME_LIMIT_PROFILE)
    store = RunStore(tmp_path / "limited")
    run = the_run(planned, store)
    reference, reference_run = train_uninterrupted(TIME_LIMIT_PROFILE, tmp_path)  # on the node's other core
    limited = Launch(planned, store, site_file("short", time_min=2))

    assert limited.result() == {run.run_id: "finished"}
    *requeued, finished = run.status().attempts
    assert requeued and {attempt.outcome for attempt in requeued} == {"requeued"} and finished.outcome == "finished"
    assert [attempt.start_iter for attempt in run.status().attempts[1:]] == [attempt.end_iter for attempt in requeued]
    assert 0 < requeued[0].end_iter < TIME_LIMIT_PROFILE.max_iters
    assert "this job is timed-out" in job_log(store, finished.job_id or "")
    assert reference.result() == {reference_run.run_id: "finished"}
    assert_trained_as(run, reference_run)


def test_a_preempted_run_checkpoints_is_requeued_and_ends_as_an_uninterrupted_run(
        site_file: Callable[..., Path], store: RunStore, local_slurm: LocalSlurm, uninterrupted: RunDir) -> None:
    """A job of the urgent partition takes the node: SIGTERM while the job still runs (GraceTime before SIGKILL),
    which the job takes as a preemption: checkpoint, requeue, resume once the node is free."""
    planned = stopped_plan(STOPPED_PROFILE)
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file())
    job_id = job_id_when_running(run)
    checkpointed(run)
    node_cpus = local_slurm.command("sinfo", "--noheader", "--partition", URGENT_PARTITION, "--format=%c").strip()
    urgent = local_slurm.command("sbatch", "--parsable", f"--partition={URGENT_PARTITION}",
                                 f"--cpus-per-task={node_cpus}", "--mem=100M", "--output=/dev/null", "--wrap",
                                 "true").strip()

    assert launch.result() == {run.run_id: "finished"}
    requeued, resumed = run.status().attempts
    assert requeued.outcome == "requeued" and resumed.outcome == "finished"
    assert resumed.start_iter == requeued.end_iter and 0 < requeued.end_iter < STOPPED_PROFILE.max_iters
    assert "Caught signal SIGTERM" in job_log(store, job_id) and "this job is preempted" in job_log(store, job_id)
    assert sacct_job(local_slurm, urgent) == ["COMPLETED", "0:0"]
    assert_trained_as(run, uninterrupted)


def test_a_run_requeued_then_cancelled_resumes_from_each_stop_and_ends_as_an_uninterrupted_run(
        site_file: Callable[..., Path], store: RunStore, local_slurm: LocalSlurm, uninterrupted: RunDir) -> None:
    """scontrol requeue, then scancel: SIGTERM with the job already ending (KillWait before SIGKILL). The job saves
    a checkpoint and exits each time; SLURM brings the requeued job back, a second launch the cancelled run."""
    planned = stopped_plan(STOPPED_PROFILE)
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file())
    job_id = job_id_when_running(run)
    checkpointed(run)
    local_slurm.command("scontrol", "requeue", job_id)
    assert job_id_when_running(run, attempts=2) == job_id
    wait_until(lambda: latest_checkpoint(run.work_dir)[1] > run.status().attempts[1].start_iter,
               lambda: f"the requeued job saved no checkpoint: {run.status().attempts}", timeout_s=TIMEOUT_S)
    local_slurm.command("scancel", job_id)

    assert launch.result() == {run.run_id: "cancelled"}
    assert run_plan(planned, store, make_backend("slurm", store, site=site_file()), progress=False) == {
        run.run_id: "finished"}
    requeued, cancelled, finished = run.status().attempts
    assert [requeued.outcome, cancelled.outcome, finished.outcome] == ["interrupted", "cancelled", "finished"]
    stops = [int(iteration) for iteration in STOP_CHECKPOINT.findall(job_log(store, job_id))]
    assert stops == [cancelled.start_iter, finished.start_iter] and 0 < stops[0] < stops[1]
    assert_trained_as(run, uninterrupted)


def kill_training_process(store: RunStore) -> None:
    """SIGKILL to the process that trains the store's job (on this machine, the cluster's node), as the kernel's
    out-of-memory killer sends it: no warning, and nothing for SLURM to take for a cancel."""
    job_command = ["-u", "-m", "submitit.core._submit", str((store.root / SUBMITIT_DIR).resolve())]
    trainers = [int(proc.name) for proc in Path("/proc").iterdir()
                if proc.name.isdigit() and arguments(proc)[1:] == job_command]  # srun's own lines start with srun
    assert len(trainers) == 1, f"not one process runs {job_command}: {trainers}"
    os.kill(trainers[0], signal.SIGKILL)


def arguments(proc: Path) -> list[str]:
    """The command line of /proc/PID, split ([] once the process has ended)."""
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_run(
        site_file: Callable[..., Path], store: RunStore, uninterrupted: RunDir) -> None:
    """SIGKILL, no warning: the job fails; a second launch resumes from the last periodic checkpoint."""
    planned = stopped_plan(STOPPED_PROFILE)
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file())
    job_id_when_running(run)
    checkpointed(run)
    kill_training_process(store)

    assert launch.result() == {run.run_id: "failed"}
    killed_at = latest_checkpoint(run.work_dir)[1]
    assert run_plan(planned, store, make_backend("slurm", store, site=site_file()), progress=False) == {
        run.run_id: "finished"}
    killed, resumed = run.status().attempts
    assert killed.outcome == "failed" and resumed.start_iter == killed_at > 0
    assert_trained_as(run, uninterrupted)


def test_a_two_task_job_trains_with_mmengines_slurm_launcher(site_file: Callable[..., Path], store: RunStore) -> None:
    planned = plan([only_row("tsd_nopc", "two-tasks", tsd_cpu_tasks=2)], "smoke", (0,))
    run = the_run(planned, store)

    assert run_plan(planned, store, make_backend("slurm", store, site=site_file()), progress=False) == {
        run.run_id: "finished"}

    log = newest_log(run)
    for line in ("Distributed launcher: slurm", "Distributed training: True", "GPU number: 2"):
        assert line in log
    script = next((store.root / SUBMITIT_DIR).glob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
    assert run.metrics()["iters"] == 6


def newest_log(run: RunDir) -> str:
    """The mmengine log of the run's latest attempt ('' before there is one)."""
    logs = sorted(run.work_dir.glob("*/*.log"))
    return logs[-1].read_text() if logs else ""

