"""The training job's bookkeeping: finished runs are not retrained, a run another process trains is waited for, a
failure is recorded with its error and log tail, resuming picks the newest complete checkpoint, and a checkpoint
trained from another version of the config is not resumed.

Runtime about 20 s (one Runner that fails to build, one resume refused; no training).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tsd_study.config_loading import ConfigError
from tsd_study.launch.training import train_and_evaluate
from tsd_study.runs import RunSpec, RunStore
from tsd_study.runs.store import latest_checkpoint

SPEC = RunSpec(config="cpu/faster_rcnn", overrides={}, profile="smoke", dataset="shapes:48", seed=0, max_iters=6)
EVALUATION = {"stats": [0.25] * 12, "breakdown": []}
METRICS = {"bbox": EVALUATION, "latency_ms": 10.0, "params_M": 6.0, "iters": 6, "train_seconds": 1.0,
           "eval_seconds": 1.0}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs")


def test_the_newest_complete_checkpoint_is_resumed_from(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) == (None, 0)
    for iteration in (2, 4, 6):
        torch.save({"meta": {"iter": iteration}}, tmp_path / f"iter_{iteration}.pth")
    torch.save({"meta": {"iter": 8}, "weights": torch.zeros(10_000)}, tmp_path / "iter_8.pth")
    whole = (tmp_path / "iter_8.pth").read_bytes()
    (tmp_path / "iter_8.pth").write_bytes(whole[: len(whole) // 2])  # a writer killed half way
    (tmp_path / ".iter_10.pth.partial").write_bytes(whole)  # a preemption save that never got its name
    assert latest_checkpoint(tmp_path) == (tmp_path / "iter_6.pth", 6)


def test_a_finished_run_is_returned_without_training(store: RunStore) -> None:
    run = store.add(SPEC)
    run.write_metrics(METRICS)
    assert train_and_evaluate(run.path) == METRICS
    assert run.status().attempts == [] and not run.work_dir.exists()


def test_a_run_another_process_trains_is_waited_for_then_returned(store: RunStore) -> None:
    run = store.add(SPEC)
    trainer = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, sys, time
        from tsd_study.runs import RunDir
        run = RunDir(sys.argv[1])
        with run.training_lock():
            print("training", flush=True)
            time.sleep(2)
            run.write_metrics(json.loads(sys.argv[2]))
    """), str(run.path), json.dumps(METRICS)], stdout=subprocess.PIPE, text=True)
    assert trainer.stdout is not None and trainer.stdout.readline() == "training\n"

    assert train_and_evaluate(run.path) == METRICS

    assert trainer.wait(timeout=30) == 0
    assert run.status().attempts == []  # this process did not train it


def test_a_failure_is_recorded_with_its_error_and_log_tail_and_raised(store: RunStore) -> None:
    run = store.add(RunSpec(config="cpu/faster_rcnn", overrides={"model.rpn_head.type": "NoSuchHead"},
                            profile="smoke", dataset="shapes:48", seed=0, max_iters=6))
    with pytest.raises(KeyError, match="NoSuchHead"):
        train_and_evaluate(run.path)
    status = run.status()
    assert status.state == "failed"
    assert "NoSuchHead" in (status.error or "") and status.error.startswith("Traceback")
    assert status.log_tail and 0 < len(status.log_tail) <= 40
    (attempt,) = status.attempts
    assert (attempt.executor, attempt.outcome, attempt.start_iter) == ("direct", "failed", 0)
    manifest = run.manifest()
    assert manifest is not None and manifest["spec"] == run.spec().to_dict() and manifest["ended_at"] is None
    assert not run.is_busy()


def test_a_checkpoint_from_another_version_of_the_config_is_not_resumed(store: RunStore) -> None:
    run = store.add(SPEC)
    run.work_dir.mkdir(parents=True)
    checkpoint = run.work_dir / "iter_2.pth"
    torch.save({"meta": {"iter": 2}}, checkpoint)
    run.write_manifest({"spec": SPEC.to_dict(), "start_iter": 0, "recipe_digest": "0123456789abcdef"})
    with pytest.raises(ConfigError, match="checkpoint was trained from another version of cpu/faster_rcnn"):
        train_and_evaluate(run.path)
    (attempt,) = run.status().attempts
    assert (attempt.outcome, attempt.start_iter) == ("failed", 2) and checkpoint.is_file()
    assert run.manifest()["recipe_digest"] == "0123456789abcdef"  # still says what the checkpoint was trained from
