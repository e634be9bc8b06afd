"""Studies trained end to end with the local executor, through the CLI, on the smoke profile (6 iterations, 48 images).

Real training: each run takes 20-40 s on this 2-core machine, and no more than two train at a time. The module takes
about 5 minutes: the end-to-end study (with a rerun and --force), kill -9 of a running study and its resumption,
and two launchers of one plan started at once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tsd_study.data import resolve_dataset
from tsd_study.launch.executors import SUBMITIT_DIR
from tsd_study.metrics import evaluate_coco
from tsd_study.runs import RunDir, RunStore, plan
from tsd_study.runs.store import STATES, latest_checkpoint

pytestmark = pytest.mark.slow

TIMEOUT_S = 600
POLL_S = 0.5
MANIFEST_KEYS = {"spec", "git_commit", "versions", "host", "device", "executor", "slurm_job_id", "started_at",
                 "ended_at", "start_iter", "recipe_digest"}
VERSIONED = {"python", "torch", "mmcv", "mmdet", "mmengine", "tsd-study"}


def study_command(store: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tsd_study.cli", "study", "run", *args, "--profile", "smoke", "--seeds", "0", "--store", str(store),
            "--no-progress"]


def run_study(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tsd-study study run ARGS --profile smoke` in a fresh process, as a user runs it."""
    finished = subprocess.run(study_command(store, *args), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    return finished


def wait_until(done: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout_s:.0f}s: {what}")
        time.sleep(POLL_S)


def attempts(run: RunDir) -> list[Any]:
    return run.status().attempts


@dataclass
class Table2:
    """table2 trained once on the smoke profile in its own store."""

    store: RunStore
    first: subprocess.CompletedProcess[str]

    @property
    def runs(self) -> list[RunDir]:
        return self.store.runs()


@pytest.fixture(scope="module")
def table2(tmp_path_factory: pytest.TempPathFactory) -> Table2:
    store = tmp_path_factory.mktemp("table2") / "runs"
    return Table2(RunStore(store), run_study(store, "table2", "--profile-overhead"))


def test_the_study_trains_every_run_once_and_reports_it(table2: Table2) -> None:
    lines = table2.first.stdout.splitlines()
    assert f"2 runs in {table2.store.root}/: 2 finished" in lines
    (overhead,) = [line for line in lines if line.startswith("overhead: ")]
    assert "2 run(s) trained" in overhead
    assert sorted(use for run in table2.runs for use in run.status().uses) == ["table2/tsd_joint", "table2/tsd_nopc"]
    for run in table2.runs:  # each run's status line, with its metrics, as it ended
        assert sum(line.startswith(f"{run.run_id}  finished") and " AP=" in line for line in lines) == 1
    for run in table2.runs:
        assert sorted(path.name for path in run.path.iterdir() if not path.name.startswith(".")) == [
            "derived_proposals.json", "manifest.json", "metrics.json", "predictions.bbox.json", "spec.json", "status.json",
            "work"]
        (attempt,) = attempts(run)
        assert (attempt.executor, attempt.outcome, attempt.start_iter, attempt.end_iter) == ("local", "finished", 0, 6)
        assert (run.work_dir / "iter_6.pth").is_file()


def test_metrics_are_complete_and_recomputable_from_the_predictions(table2: Table2) -> None:
    for run in table2.runs:
        metrics = run.metrics()
        assert metrics is not None and metrics["iters"] == 6
        assert metrics["latency_ms"] > 0 and metrics["train_seconds"] > 0 and metrics["eval_seconds"] > 0
        assert 5.0 < metrics["params_M"] < 8.0
        assert all(stat == -1 or 0 <= stat <= 1 for stat in metrics["bbox"]["stats"])
        assert {(cell["area"], cell["iou"]) for cell in metrics["bbox"]["breakdown"]} == {
            (area, round(0.5 + 0.05 * step, 2)) for area in ("all", "small", "medium", "large") for step in range(10)}
        predictions = json.loads(run.predictions_file("bbox").read_text())
        assert predictions and set(predictions[0]) >= {"image_id", "bbox", "score", "category_id"}
        ann_file = resolve_dataset(run.spec().dataset).val.ann_file
        assert evaluate_coco(ann_file, run.predictions_file("bbox")).to_json() == metrics["bbox"]


def test_every_run_keeps_its_learning_curve_and_tsd_runs_their_offset_health(table2: Table2) -> None:
    for run in table2.runs:  # the smoke profile validates at 25, 50, 75 and 100% of 6 iterations, rounded
        metrics = run.metrics()
        curve = metrics["curve"]
        assert [point["iter"] for point in curve] == [2, 4, 6]
        assert curve[-1]["AP"] == pytest.approx(100 * metrics["bbox"]["stats"][0])
        health = metrics["offset_health"]
        assert health == curve[-1]["offset_health"]
        assert set(health) == {"feature_rms", "cls_offset_rms", "cls_offset_max", "reg_offset_rms",
                               "reg_offset_max", "cls_points_outside"}
        assert health["feature_rms"] > 0 and 0 <= health["cls_points_outside"] <= 1
        assert health["cls_offset_max"] >= health["cls_offset_rms"] >= 0


def test_tsd_runs_write_the_derived_proposals_of_fig5(table2: Table2) -> None:
    for run in table2.runs:  # both rows of Table 2 are TSD models
        dump = json.loads(run.derived_proposals_file.read_text())
        assert len(dump["images"]) == 4 and dump["cls_manner"] == "point" and dump["reg_manner"] == "prop"
        assert all(Path(image["img_path"]).is_file() for image in dump["images"])


def test_the_manifest_says_what_trained_the_run(table2: Table2) -> None:
    for run in table2.runs:
        manifest = run.manifest()
        assert manifest is not None and set(manifest) == MANIFEST_KEYS
        assert manifest["spec"] == run.spec().to_dict()
        assert set(manifest["versions"]) == VERSIONED and all(manifest["versions"].values())
        assert (manifest["device"], manifest["executor"], manifest["slurm_job_id"], manifest["start_iter"]) == (
            "cpu", "local", None, 0)
        assert manifest["started_at"] <= manifest["ended_at"]
    recipes = {run.run_id: run.recipe_digest for run in plan(["table2"], "smoke", (0,)).runs}
    assert {run.run_id: run.manifest()["recipe_digest"] for run in table2.runs} == recipes


def test_a_rerun_skips_finished_runs_and_force_retrains_them_identically(table2: Table2) -> None:
    before = {run.run_id: (run.manifest(), run.metrics()) for run in table2.runs}
    rerun = run_study(table2.store.root, "table2")
    assert f"2 runs in {table2.store.root}/: 2 finished" in rerun.stdout
    assert {run.run_id: (run.manifest(), run.metrics()) for run in table2.runs} == before

    run_study(table2.store.root, "table2", "--force")
    for run in table2.runs:
        first, again = attempts(run)
        assert again.start_iter == 0 and again.started_at >= first.ended_at
        old_manifest, old_metrics = before[run.run_id]
        assert run.manifest()["started_at"] >= old_manifest["ended_at"]
        assert run.metrics()["bbox"] == old_metrics["bbox"]  # same seed, same machine: the same training


def test_a_run_from_an_edited_config_stops_the_study_until_it_is_retrained(table2: Table2) -> None:
    stale, kept = table2.runs
    # as if the config had changed since: the run recorded another recipe than its config gives now
    stale.write_manifest({**stale.manifest(), "recipe_digest": "0123456789abcdef"})
    before = {run.run_id: (len(attempts(run)), run.metrics()) for run in table2.runs}
    refused = subprocess.run(study_command(table2.store.root, "table2"), capture_output=True, text=True,
                             timeout=TIMEOUT_S)
    assert refused.returncode != 0 and "trained from another version of their config" in refused.stderr
    assert f"{stale.run_id} ({stale.spec().config} seed 0)" in refused.stderr and kept.run_id not in refused.stderr
    assert {run.run_id: (len(attempts(run)), run.metrics()) for run in table2.runs} == before

    run_study(table2.store.root, "table2", "--retrain-stale")
    assert len(attempts(stale)) == before[stale.run_id][0] + 1 and attempts(stale)[-1].start_iter == 0
    assert stale.manifest()["recipe_digest"] != "0123456789abcdef"
    assert stale.metrics()["bbox"] == before[stale.run_id][1]["bbox"]  # the config did not really change
    assert (len(attempts(kept)), kept.metrics()) == before[kept.run_id]


def test_kill_9_of_a_running_study_loses_nothing(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    first_run, second_run = (store.run(run.run_id) for run in plan(["table2"], "smoke", (0,)).runs)
    study = subprocess.Popen(study_command(store.root, "table2", "--max-concurrent", "1"), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: first_run.metrics() is not None and latest_checkpoint(second_run.work_dir)[1] >= 2,
                   "the first run did not finish or the second did not complete its first checkpoint")
    finally:
        os.killpg(study.pid, signal.SIGKILL)  # the launcher and its jobs: the whole process group
        study.wait()
    wait_until(lambda: not second_run.is_busy(), "the killed job still holds its run's lock", timeout_s=10)
    assert second_run.status().state == "running" and second_run.metrics() is None
    first_manifest = first_run.manifest()

    run_study(store.root, "table2")

    for run in (first_run, second_run):
        assert json.loads((run.path / "status.json").read_text())["state"] == "finished"
        assert run.metrics() is not None and run.metrics()["iters"] == 6
    assert len(attempts(first_run)) == 1 and first_run.manifest() == first_manifest
    killed, resumed = attempts(second_run)
    assert killed.outcome == "interrupted" and resumed.outcome == "finished"
    assert resumed.start_iter >= 2 and second_run.manifest()["start_iter"] == resumed.start_iter
    assert [point["iter"] for point in second_run.metrics()["curve"]] == [2, 4, 6]  # no point lost to the kill
    assert all(run.status().state in STATES for run in store.runs())


@pytest.fixture(scope="module")
def two_launchers(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, list[subprocess.CompletedProcess]]:
    """Two `study run table5 table9` of one store started at the same moment, one job at a time each."""
    store = RunStore(tmp_path_factory.mktemp("concurrent") / "runs")
    launchers = [subprocess.Popen(study_command(store.root, "table5", "table9", "--max-concurrent", "1"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    finished = []
    for launcher in launchers:
        out, err = launcher.communicate(timeout=TIMEOUT_S)
        finished.append(subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err))
    return store, finished


def test_shared_runs_are_trained_once(two_launchers: tuple[RunStore, list[subprocess.CompletedProcess]]) -> None:
    store, _ = two_launchers
    planned = plan(["table5", "table9"], "smoke", (0,))
    assert (planned.cells, planned.distinct_runs, len(planned.shared_runs)) == (6, 4, 2)
    manifests = [run.manifest() for run in store.runs()]
    assert len(manifests) == planned.distinct_runs and all(manifests)
    assert sum(len(attempts(run)) for run in store.runs()) == planned.distinct_runs


def test_concurrent_launches_train_each_run_once(
        two_launchers: tuple[RunStore, list[subprocess.CompletedProcess]]) -> None:
    store, launchers = two_launchers
    for launcher in launchers:
        assert launcher.returncode == 0, launcher.stderr[-3000:]
        assert f"4 runs in {store.root}/: 4 finished" in launcher.stdout
    for run in store.runs():
        (attempt,) = attempts(run)
        assert attempt.outcome == "finished" and attempt.start_iter == 0
    # the launchers split the runs: no run was submitted by both
    assert len(list((store.root / SUBMITIT_DIR).glob("*_submitted.pkl"))) == 4
