"""Studies through the SLURM executor on the real local cluster (cluster/local-slurm), faults included.

Every test trains on the smoke profile (6 iterations, 48 images) or on a longer schedule it stops itself (the
cancelled run's schedule outlasts the SIGKILL that follows scancel). The module takes about 6 minutes on 2 otherwise
idle cores: SLURM requeues a job about 10-25 s after it stops, and the time-limit test waits for SLURM's own signal,
which comes 30-90 s into a job with a 2-minute limit.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tsd_study.launch import make_backend, run_plan
from tsd_study.launch.executors import SUBMITIT_DIR
from tsd_study.launch.sites import SITES_DIR
from tsd_study.runs import Plan, RunDir, RunStore, plan
from tsd_study.studies import Study, parse_study
from tsd_study.studies.profiles import Profile

from slurm_fixtures import LocalSlurm
from test_local_slurm import sacct_job, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TIMEOUT_S = 600
LONG_PROFILE = Profile("slurm-long", "cpu", "shapes:48", 1000, "a schedule longer than any test waits for")
# submitit's jobs ignore scancel's SIGTERM and train on until SIGKILL, KillWait (10 s) later: a smoke run can finish
# in that time, and then a rerun rightly finds nothing to retrain. 60 iterations take about half a minute.
CANCEL_PROFILE = Profile("slurm-cancel", "cpu", "shapes:48", 60, "a schedule that outlasts SLURM's KillWait")


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

    def __init__(self, planned: Plan, store: RunStore, site: Path) -> None:
        self.states: dict[str, str] = {}
        self.error: BaseException | None = None
        backend = make_backend("slurm", store, site=site)
        self.thread = threading.Thread(target=self._run, args=(planned, store, backend), daemon=True)
        self.thread.start()

    def _run(self, planned: Plan, store: RunStore, backend: Any) -> None:
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


def test_a_cancelled_run_is_reported_cancelled_and_retrained_by_a_rerun(site_file: Callable[..., Path],
                                                                        store: RunStore,
                                                                        local_slurm: LocalSlurm) -> None:
    planned = plan([only_row("tsd_nopc", "cancelled")], CANCEL_PROFILE, seeds=(5,))
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file())
    local_slurm.command("scancel", job_id_when_running(run))

    assert launch.result() == {run.run_id: "cancelled"}
    assert run.status().state == "cancelled" and run.status().attempts[-1].outcome == "cancelled"

    assert run_plan(planned, store, make_backend("slurm", store, site=site_file()), progress=False) == {
        run.run_id: "finished"}
    assert [attempt.outcome for attempt in run.status().attempts] == ["cancelled", "finished"]


def test_a_run_at_its_time_limit_is_requeued_and_resumes(site_file: Callable[..., Path], store: RunStore,
                                                         local_slurm: LocalSlurm) -> None:
    planned = plan([only_row("tsd_nopc", "time-limit")], LONG_PROFILE, (0,))
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file("short", time_min=2))
    wait_until(lambda: resumed_after_progress(run) is not None,
               lambda: f"no attempt resumed from a checkpoint SLURM's time limit made: {run.status().attempts}")
    checkpointed, resumed = resumed_after_progress(run) or (None, None)
    assert checkpointed is not None and resumed is not None and checkpointed.end_iter is not None
    wait_until(lambda: f"resumed epoch: 0, iter: {checkpointed.end_iter}" in newest_log(run),
               lambda: f"the attempt after {checkpointed} did not resume from its checkpoint")
    local_slurm.command("scancel", resumed.job_id)  # the schedule is far longer than this test waits

    assert launch.result() == {run.run_id: "cancelled"}
    assert resumed.start_iter == checkpointed.end_iter > 0
    assert "this job is timed-out" in job_log(store, resumed.job_id)
    states = local_slurm.command("sacct", "--noheader", "--parsable2", "--allocations", "--duplicates",
                                 "-j", resumed.job_id, "-o", "State").splitlines()
    assert states[0] == "REQUEUED" and states[-1].startswith("CANCELLED")


def resumed_after_progress(run: RunDir) -> tuple[Any, Any] | None:
    """(an attempt requeued with a checkpoint past iteration 0, the running attempt after it), if there are such."""
    status = run.status()
    for checkpointed, resumed in itertools.pairwise(status.attempts):
        if checkpointed.outcome == "requeued" and (checkpointed.end_iter or 0) > 0 and resumed.outcome is None:
            return checkpointed, resumed
    return None


def test_a_preempted_run_checkpoints_is_requeued_and_resumes(store: RunStore, site_file: Callable[..., Path],
                                                             local_slurm: LocalSlurm) -> None:
    planned = plan([only_row("tsd_nopc", "preempted")], "smoke", seeds=(3,))
    run = the_run(planned, store)
    launch = Launch(planned, store, site_file())
    job_id = job_id_when_running(run)
    wait_until(lambda: (run.work_dir / "iter_2.pth").is_file(), lambda: "no checkpoint of iteration 2")
    for signal_name in ("TERM", "USR2"):  # a preemption as submitit's own helper makes one
        local_slurm.command("scancel", f"--signal={signal_name}", job_id)

    assert launch.result() == {run.run_id: "finished"}
    requeued, resumed = run.status().attempts
    assert requeued.outcome == "requeued" and requeued.end_iter is not None and requeued.end_iter >= 2
    assert resumed.start_iter == requeued.end_iter and resumed.outcome == "finished"
    assert run.metrics()["iters"] == 6
    assert "this job is preempted" in job_log(store, job_id)


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

