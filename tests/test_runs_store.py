"""The run store: files, status updates, the per-run lock across processes, and writes that survive kill -9.

Runtime about 10 s (most of it the kill -9 rounds, each a fresh writer process).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tsd_study.runs import RunDir, RunSpec, RunStatus, RunStore, StoreError, default_store
from tsd_study.runs.store import METRIC_KEYS, STORE_VARIABLE, Attempt, RunState

SPEC = RunSpec(config="cpu/tsd_pc", overrides={}, profile="smoke", dataset="shapes:48", seed=0, max_iters=6)
EVALUATION = {"stats": [0.5] * 12, "breakdown": [{"area": "all", "iou": 0.5, "AP": 0.5}]}
METRICS = {"bbox": EVALUATION, "latency_ms": 10.0, "params_M": 6.0, "iters": 6, "train_seconds": 1.0,
           "eval_seconds": 1.0}
KILL_ROUNDS = 12
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_default_store_is_the_same_from_the_root_and_notebooks(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """The CLI (run from the root) and the notebooks (run from notebooks/) share one store, unless one is set."""
    monkeypatch.delenv(STORE_VARIABLE, raising=False)
    monkeypatch.chdir(ROOT)
    from_root = default_store()
    monkeypatch.chdir(ROOT / "notebooks")
    assert default_store() == from_root == ROOT / "runs" and RunStore().root == from_root
    monkeypatch.setenv(STORE_VARIABLE, str(tmp_path / "elsewhere"))
    assert default_store() == RunStore().root == tmp_path / "elsewhere"
    monkeypatch.chdir(ROOT)
    assert default_store() == tmp_path / "elsewhere"


def test_default_store_is_beside_the_nearest_pyproject(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(STORE_VARIABLE, raising=False)
    (tmp_path / "project" / "a" / "b").mkdir(parents=True)
    (tmp_path / "project" / "pyproject.toml").touch()
    monkeypatch.chdir(tmp_path / "project" / "a" / "b")
    assert default_store() == tmp_path.resolve() / "project" / "runs"


def python_process(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running ``code`` (it prints a line when it is ready)."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, text=True)


@pytest.fixture
def lock_holder(store: RunStore) -> Iterator[tuple[RunDir, subprocess.Popen[str]]]:
    """Another process that holds the training lock of a run until it is killed."""
    run = store.add(SPEC)
    holder = python_process("""
        import sys, time
        from tsd_study.runs import RunDir
        with RunDir(sys.argv[1]).training_lock():
            print("locked", flush=True)
            time.sleep(600)
    """, str(run.path))
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    yield run, holder
    holder.kill()
    holder.wait()


def test_add_writes_the_spec_and_a_pending_status_and_merges_uses(store: RunStore) -> None:
    run = store.add(SPEC, ("table2/tsd_nopc",))
    store.add(SPEC, ("table1/tsd_nopc", "table2/tsd_nopc"))
    assert run.path == store.root / SPEC.run_id
    assert run.spec() == SPEC
    assert json.loads((run.path / "spec.json").read_text()) == SPEC.to_dict()
    status = run.status()
    assert status.state == "pending" and status.attempts == []
    assert status.uses == ["table1/tsd_nopc", "table2/tsd_nopc"]
    assert [listed.run_id for listed in store.runs()] == [SPEC.run_id]


def test_a_directory_holding_another_spec_is_refused(store: RunStore) -> None:
    run = store.add(SPEC)
    (run.path / "spec.json").write_text(json.dumps({**SPEC.to_dict(), "seed": 1}))
    with pytest.raises(StoreError, match=r"spec\.json: holds a different spec"):
        store.add(SPEC)


def test_status_round_trip_and_ending_an_attempt(store: RunStore) -> None:
    run = store.add(SPEC)

    def start(status: RunStatus) -> None:
        status.state = "running"
        status.attempts.append(Attempt(started_at="2026-01-01T00:00:00+00:00", executor="local", job_id="12",
                                       host="vm", start_iter=2))

    run.update_status(start)
    run.update_status(lambda status: status.end_attempt("requeued", end_iter=4))
    run.update_status(lambda status: status.end_attempt("failed"))  # already ended: kept as it was
    attempt = run.status().attempts[0]
    assert (attempt.outcome, attempt.end_iter, attempt.start_iter) == ("requeued", 4, 2)
    assert attempt.ended_at is not None
    assert RunStatus.from_dict(run.status().to_dict(), "x") == run.status()


def test_states_are_read_as_run_states_and_stored_as_plain_strings(store: RunStore) -> None:
    run = store.add(SPEC)
    run.update_status(lambda status: setattr(status, "state", RunState.RUNNING))
    assert json.loads((run.path / "status.json").read_text())["state"] == "running"
    assert run.status().state is RunState.RUNNING


def test_the_real_state_of_a_run(store: RunStore) -> None:
    """Recorded, except that a run marked running which no live process trains is interrupted, and a run with
    complete metrics is finished."""
    run = store.add(SPEC)
    assert run.state() is RunState.PENDING
    run.update_status(lambda status: setattr(status, "state", RunState.RUNNING))
    assert run.state() is RunState.INTERRUPTED
    with run.training_lock():
        assert run.state() is RunState.RUNNING
    run.write_metrics(METRICS)
    assert run.state() is RunState.FINISHED


def test_wall_seconds_add_up_the_ended_attempts() -> None:
    attempts = [Attempt("2026-01-01T00:00:00+00:00", "slurm", "1", "n1", 0, "2026-01-01T00:01:30+00:00", "requeued", 8),
                Attempt("2026-01-01T00:05:00+00:00", "slurm", "2", "n2", 8, "2026-01-01T00:06:00+00:00", "finished"),
                Attempt("2026-01-01T00:07:00+00:00", "slurm", "3", "n1", 0)]  # still running: not counted
    assert RunStatus(attempts=attempts).wall_seconds() == 150.0
    assert RunStatus().wall_seconds() == 0.0


def test_a_broken_status_file_is_named(store: RunStore) -> None:
    run = store.add(SPEC)
    (run.path / "status.json").write_text('{"state": "sleeping", "attempts": []}')
    with pytest.raises(StoreError, match=r"status.json: state 'sleeping' is not one of pending, queued"):
        run.status()
    (run.path / "status.json").write_text('{"state": "run')
    with pytest.raises(StoreError, match=r"status\.json: not valid JSON"):
        run.status()


def test_only_complete_metrics_count(store: RunStore) -> None:
    run = store.add(SPEC)
    assert run.metrics() is None
    for key in METRIC_KEYS:
        with pytest.raises(StoreError, match=f"refusing incomplete metrics: missing '{key}'"):
            run.write_metrics({name: value for name, value in METRICS.items() if name != key})
    with pytest.raises(StoreError, match="'segm' is not a COCO evaluation"):
        run.write_metrics({**METRICS, "segm": {"stats": [0.1]}})
    (run.path / "metrics.json").write_text(json.dumps({"bbox": EVALUATION}))  # a job from an older version
    assert run.metrics() is None
    run.write_metrics(METRICS)
    assert run.metrics() == METRICS


def test_the_training_lock_is_held_across_processes_and_freed_when_its_holder_dies(
        lock_holder: tuple[RunDir, subprocess.Popen[str]]) -> None:
    run, holder = lock_holder
    assert run.is_busy()
    with pytest.raises(StoreError, match="being trained by another process"):
        run.discard_results()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not run.is_busy()


def test_discard_results_forgets_the_training_but_keeps_spec_and_uses(store: RunStore) -> None:
    run = store.add(SPEC, ("table2/tsd_nopc",))
    run.write_metrics(METRICS)
    run.write_manifest({"started_at": "2026-01-01T00:00:00+00:00"})
    run.predictions_file("bbox").write_text("[]")
    (run.work_dir / "iter_6.pth").parent.mkdir()
    (run.work_dir / "iter_6.pth").write_bytes(b"x")
    run.update_status(lambda status: setattr(status, "state", "finished"))

    run.discard_results()

    assert sorted(path.name for path in run.path.iterdir() if not path.name.startswith(".")) == [
        "spec.json", "status.json"]
    assert run.status().state == "pending" and run.status().uses == ["table2/tsd_nopc"]


def test_a_writer_killed_at_any_instant_leaves_old_or_new_json(store: RunStore) -> None:
    """Each round a process rewrites status.json and metrics.json (several MB each, so that a plain write would be
    caught half done) as fast as it can and is killed with SIGKILL at a random instant: both files still parse and
    hold one whole version."""
    run = store.add(SPEC)
    for kill_round in range(KILL_ROUNDS):
        writer = python_process("""
            import sys
            from tsd_study.runs import RunDir
            run = RunDir(sys.argv[1])
            for version in range(10**9):
                def change(status, version=version):
                    status.state = ("queued", "running")[version % 2]
                    status.log_tail = [f"{version:08d}" * 100_000] * 10
                run.update_status(change)
                breakdown = [{"v": f"{version:08d}" * 1000}] * 1000
                run.write_metrics({"bbox": {"stats": [version] * 12, "breakdown": breakdown},
                                   "latency_ms": version, "params_M": 1.0, "iters": version,
                                   "train_seconds": 1.0, "eval_seconds": 1.0})
                if version == 0:
                    print("written", flush=True)
        """, str(run.path))
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        time.sleep(random.Random(kill_round).uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert_one_whole_version(run)


def assert_one_whole_version(run: RunDir) -> None:
    status = run.status()
    (marker,) = set(status.log_tail or [])
    version = int(marker[:8])
    assert len(status.log_tail or []) == 10 and marker == f"{version:08d}" * 100_000
    assert status.state == ("queued", "running")[version % 2]
    metrics: dict[str, Any] = json.loads((run.path / "metrics.json").read_text())
    (cell,) = {cell["v"] for cell in metrics["bbox"]["breakdown"]}
    assert cell == f"{metrics['iters']:08d}" * 1000 and metrics["bbox"]["stats"] == [metrics["iters"]] * 12
