"""The tasks of a distributed job: while task 0 waits for the run's lock (another job trains the run), the other tasks
wait for its word without timing out, then train, or return the metrics the other job wrote.

Runtime 3 min on 2 cores shared with two training jobs (the gloo test 2 min of it: two 2-task jobs of spawned processes
importing torch, each waiting 8 s for the lock); the tests not marked slow about 40 s.
"""
from __future__ import annotations

import datetime
import json
import multiprocessing
import socket
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from tsd_study.launch.job_environment import FAILED, FINISHED, TRAIN, JobContext, TaskGate
from tsd_study.runs import RunDir, RunSpec, RunStore

HOLD_S = 8.0  # how long another job holds the run's lock: longer than every timeout below, retries included
RENDEZVOUS_TIMEOUT_S = 2
SPEC = RunSpec(config="cpu/faster_rcnn", overrides={}, profile="smoke", dataset="shapes:48", seed=0, max_iters=6)
METRICS = {"bbox": {"stats": [0.25] * 12, "breakdown": []}, "latency_ms": 10.0, "params_M": 6.0, "iters": 6,
           "train_seconds": 1.0, "eval_seconds": 1.0}


def hold_lock(run_dir: Path, seconds: float, metrics: dict | None = None) -> subprocess.Popen:
    """Another job: a process that holds the run's lock for ``seconds`` (then writes ``metrics``, if given)."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import json, sys, time
        from tsd_study.runs import RunDir
        run = RunDir(sys.argv[1])
        with run.training_lock():
            print("holding", flush=True)
            time.sleep(float(sys.argv[2]))
            if sys.argv[3] != "null":
                run.write_metrics(json.loads(sys.argv[3]))
    """), str(run_dir), str(seconds), json.dumps(metrics)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
    return holder


def quick_gate(path: Path, silence_s: float) -> TaskGate:
    return TaskGate(path, beat_s=0.1, silence_s=silence_s, poll_s=0.05)


def test_the_other_tasks_outwait_their_silence_limit_while_task_0_waits_for_the_lock(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    gate = quick_gate(tmp_path / ".gate-7-0.json", silence_s=1.5)
    holder = hold_lock(tmp_path, seconds=4.0)
    words: list[str] = []
    began = time.monotonic()
    other = threading.Thread(target=lambda: words.append(gate.wait()))
    other.start()
    lock = run.training_lock()
    gate.acquire(lock)  # task 0: about 4 s, beating every 0.1 s
    gate.announce(TRAIN)
    other.join(timeout=30)
    lock.release()
    assert words == [TRAIN] and time.monotonic() - began > 3.5
    assert holder.wait(timeout=30) == 0


def test_the_other_tasks_give_up_on_a_silent_or_failed_task_0(tmp_path: Path) -> None:
    gate = quick_gate(tmp_path / ".gate-7-0.json", silence_s=0.5)
    with pytest.raises(RuntimeError, match=r"\.gate-7-0\.json: no word from task 0 for 0 s; is it alive\?"):
        gate.wait()
    gate.announce(FAILED)
    with pytest.raises(RuntimeError, match="task 0 failed before training"):
        gate.wait()
    gate.announce(FINISHED)
    assert gate.wait() == FINISHED


def test_the_gate_file_names_the_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    context = JobContext("slurm", "123_4", 1, 2, ("node1",))
    assert TaskGate.of(tmp_path, context).path == tmp_path / ".gate-123_4-0.json"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")  # a requeued job keeps its id
    assert TaskGate.of(tmp_path, context).path == tmp_path / ".gate-123_4-2.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def task(rank: int, run_dir: str, port: int, gated: bool, ready: multiprocessing.Queue, go: Event,
         results: multiprocessing.Queue) -> None:
    """One task of a 2-task gloo job: task 0 takes the run's lock; both then meet in the rendezvous and all-reduce."""
    import torch
    import torch.distributed as dist

    ready.put(rank)
    go.wait()
    gate = quick_gate(Path(run_dir) / ".gate-job-0.json", silence_s=60.0)
    lock = RunDir(run_dir).training_lock()
    try:
        if rank == 0:
            gate.acquire(lock)
            gate.announce(TRAIN)
        elif gated:
            gate.wait()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=RENDEZVOUS_TIMEOUT_S))
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)
        dist.destroy_process_group()
        results.put((rank, float(total)))
    except Exception as error:  # handed to the test
        results.put((rank, f"{type(error).__name__}: {error}"))
    finally:
        if lock.is_locked:
            lock.release()


def run_job(run_dir: Path, gated: bool) -> dict[int, object]:
    """Start both tasks, let them import torch, then have another job hold the lock for HOLD_S as they begin."""
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    port = free_port()
    tasks = [context.Process(target=task, args=(rank, str(run_dir), port, gated, ready, go, results))
             for rank in (0, 1)]
    for process in tasks:
        process.start()
    for _ in tasks:
        ready.get(timeout=120)
    holder = hold_lock(run_dir, seconds=HOLD_S)
    go.set()
    outcome = dict(results.get(timeout=120) for _ in tasks)
    for process in tasks:
        process.join(timeout=60)
    assert holder.wait(timeout=30) == 0
    return outcome


@pytest.mark.slow
def test_a_gloo_job_meets_after_task_0_waited_longer_than_the_rendezvous_timeout(tmp_path: Path) -> None:
    """Without the gate (the control) task 1 enters the rendezvous at once and times out while task 0 waits (torch's
    store client retries once after its timeout, so the other job holds the lock for more than twice that)."""
    assert run_job(tmp_path / "gated", gated=True) == {0: 3.0, 1: 3.0}
    ungated = run_job(tmp_path / "ungated", gated=False)
    assert "DistNetworkError: The client socket has timed out" in str(ungated[1]), ungated


def test_train_and_evaluate_tells_the_other_tasks_when_another_job_finished_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsd_study.launch import training  # torch and mmdetection: not in the spawned tasks above

    run = RunStore(tmp_path / "runs").add(SPEC)
    contexts = {name: JobContext("slurm", "55", rank, 2, ("node1",)) for rank, name in enumerate(("task0", "task1"))}
    monkeypatch.setattr(JobContext, "current", classmethod(lambda cls: contexts[threading.current_thread().name]))
    holder = hold_lock(run.path, seconds=2.0, metrics=METRICS)
    returned: dict[str, dict] = {}
    tasks = [threading.Thread(target=lambda: returned.update({threading.current_thread().name:
                                                              training.train_and_evaluate(run.path)}), name=name)
             for name in contexts]
    for thread in tasks:
        thread.start()
    for thread in tasks:
        thread.join(timeout=60)
    assert returned == {"task0": METRICS, "task1": METRICS}
    assert json.loads((run.path / ".gate-55-0.json").read_text()) == {"word": FINISHED}
    assert run.status().attempts == [] and holder.wait(timeout=30) == 0
