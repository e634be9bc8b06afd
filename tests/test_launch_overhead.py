"""The overhead accounting of `study run --profile-overhead`: capacity, idle end and engine share."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tsd_study.launch.overhead import Overhead, measure_overhead
from tsd_study.metrics import STAT_DEFINITIONS
from tsd_study.runs import RunSpec, RunStore

EVALUATION = {"stats": [0.5] * len(STAT_DEFINITIONS), "breakdown": []}


def test_shares_split_the_capacity() -> None:
    overhead = Overhead(wall_seconds=100.0, train_seconds=150.0, eval_seconds=20.0, idle_seconds=10.0, runs=3,
                        slots=2)
    assert overhead.capacity == 200.0
    assert overhead.share == pytest.approx(0.10)
    assert overhead.idle_share == pytest.approx(0.05)
    assert overhead.describe().startswith("overhead: 10.0% of 100.0 s wall time x 2 slot(s)")


def test_idle_is_the_wait_of_the_last_slots_for_the_last_run(tmp_path: Path) -> None:
    store, started = RunStore(tmp_path / "runs"), datetime.now(timezone.utc)
    ends = {0: 1000.0, 1: 1060.0, 2: 1100.0}  # seed -> when its metrics.json was written
    for seed, end in ends.items():
        run = store.add(RunSpec(config="cpu/tsd_pc", overrides={}, profile="smoke", dataset="shapes:48", seed=seed,
                                max_iters=6), uses=(f"table2/row{seed}",))
        run.write_manifest({"started_at": started.isoformat(timespec="seconds")})
        run.write_metrics({"bbox": EVALUATION, "latency_ms": 1.0, "params_M": 1.0, "iters": 6,
                           "train_seconds": 40.0, "eval_seconds": 10.0})
        os.utime(run.metrics_file, (end, end))
    earlier = store.add(RunSpec(config="cpu/tsd_nopc", overrides={}, profile="smoke", dataset="shapes:48", seed=0,
                                max_iters=6), uses=("table2/old",))
    earlier.write_manifest({"started_at": (started - timedelta(hours=1)).isoformat(timespec="seconds")})
    earlier.write_metrics({"bbox": EVALUATION, "latency_ms": 1.0, "params_M": 1.0, "iters": 6,
                           "train_seconds": 99.0, "eval_seconds": 9.0})

    overhead = measure_overhead(store.runs(), started, wall_seconds=120.0, max_concurrent=2)

    assert (overhead.runs, overhead.slots) == (3, 2)  # the run trained before the call does not count
    assert (overhead.train_seconds, overhead.eval_seconds) == (120.0, 30.0)
    assert overhead.idle_seconds == pytest.approx(40.0)  # the slot that ended at 1060 waits for the one at 1100
    assert overhead.share == pytest.approx(1 - (150.0 + 40.0) / 240.0)
