"""Collection from a real run store (the engine's plan and store; the runs' metrics are written by hand, no training).

Runtime: about 10 s (planning loads the smoke configs once per module).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tsd_study.cli import main
from tsd_study.report import collect
from tsd_study.report.collect import MISSING, REFERENCE
from tsd_study.runs import Plan, PlannedRun, RunSpec, RunStatus, RunStore, plan

SEEDS = (0, 1)


def metrics_json(ap: float) -> dict:
    """A complete metrics.json whose 12 COCO stats are all ``ap`` percent."""
    return {"bbox": {"stats": [ap / 100] * 12, "breakdown": [{"area": "all", "iou": 0.5, "AP": ap / 100}]},
            "latency_ms": 12.0, "params_M": 5.0, "iters": 6, "train_seconds": 1.0, "eval_seconds": 1.0}


@pytest.fixture(scope="module")
def table2_plan() -> Plan:
    return plan(["table2"], "smoke", SEEDS)


def store_run(store: RunStore, planned: Plan, use: str, seed: int, state: str, ap: float | None = None,
              error: str | None = None) -> None:
    """Put one planned run into ``store`` in ``state`` (with its metrics when ``ap`` is given)."""
    (run,) = [run for run in planned.runs if use in run.uses and run.spec.seed == seed]
    run_dir = store.add(run.spec, run.uses)
    if ap is not None:
        run_dir.write_metrics(metrics_json(ap))

    def set_state(status: RunStatus) -> None:
        status.state, status.error = state, error

    run_dir.update_status(set_state)


@pytest.fixture
def store(tmp_path: Path, table2_plan: Plan) -> Path:
    """table2 with two seeds: the baseline finished twice, TSD finished once and failed once."""
    run_store = RunStore(tmp_path / "runs")
    store_run(run_store, table2_plan, "table2/tsd_nopc", 0, "finished", ap=30.0)
    store_run(run_store, table2_plan, "table2/tsd_nopc", 1, "finished", ap=32.0)
    store_run(run_store, table2_plan, "table2/tsd_joint", 0, "finished", ap=35.0)
    store_run(run_store, table2_plan, "table2/tsd_joint", 1, "failed",
              error="Traceback (most recent call last):\nRuntimeError: loss is nan")
    return run_store.root


def cell(table: pd.DataFrame, row: str, metric: str) -> Any:
    """The table's line for one row and metric, as a named tuple."""
    (line,) = table[(table.row == row) & (table.metric == metric)].itertuples(index=False)
    return line


def test_means_intervals_paper_and_effects(store: Path, table2_plan: Plan) -> None:
    table = collect("table2", "smoke", SEEDS, store, planned=table2_plan).table()
    baseline = cell(table, "tsd_nopc", "AP")
    assert (baseline.state, baseline.n, baseline.ours) == ("finished", 2, pytest.approx(31.0))
    # t(0.975, 1) = 12.706; the two seeds' standard error is 1.0.
    assert (baseline.ci_low, baseline.ci_high) == (pytest.approx(31.0 - 12.706, abs=1e-3),
                                                   pytest.approx(31.0 + 12.706, abs=1e-3))
    assert baseline.paper == 38.2 and baseline.reference == "" and math.isnan(baseline.effect)
    assert baseline.model == "EfficientNet-Lite0, TSD w/o PC"
    joint = cell(table, "tsd_joint", "AP75")
    assert (joint.state, joint.n, joint.ours) == ("1 failed, 1 finished", 1, pytest.approx(35.0))
    assert math.isnan(joint.ci_low)
    # The effect is paired by seed: only seed 0 has both rows (35 - 30), so it has no interval.
    assert (joint.reference, joint.effect, joint.paper_effect) == ("tsd_nopc", pytest.approx(5.0),
                                                                    pytest.approx(42.8 - 41.1))
    assert math.isnan(joint.effect_low)


def test_failed_and_missing_runs_show_as_such_never_as_zero(tmp_path: Path, table2_plan: Plan) -> None:
    run_store = RunStore(tmp_path / "runs")
    store_run(run_store, table2_plan, "table2/tsd_nopc", 0, "failed", error="RuntimeError: out of memory")
    store_run(run_store, table2_plan, "table2/tsd_nopc", 1, "pending")
    results = collect("table2", "smoke", SEEDS, run_store.root, planned=table2_plan)
    table = results.table()
    assert set(table[table.row == "tsd_nopc"].state) == {"1 failed, 1 pending"}
    assert set(table[table.row == "tsd_joint"].state) == {f"2 {MISSING}"}
    assert table.n.eq(0).all() and table.ours.isna().all() and table.effect.isna().all()
    shown = results.display_table()
    assert shown.loc["AP", ("TSD w/o PC", "ours")] == "1 failed, 1 pending"
    assert shown.loc["AP", ("+ joint training with sibling head H*", "ours")] == f"2 {MISSING}"
    assert results.errors() == {("tsd_nopc", 0): "RuntimeError: out of memory"}


def test_collect_plans_by_itself_and_keeps_paper_order(store: Path) -> None:
    results = collect("table2", "smoke", SEEDS, store)
    assert [row.id for row in results.rows] == ["tsd_nopc", "tsd_joint"]
    assert [(run.row_id, run.seed) for run in results.runs] == [("tsd_nopc", 0), ("tsd_nopc", 1),
                                                                ("tsd_joint", 0), ("tsd_joint", 1)]


def test_reference_rows_show_the_paper_only(tmp_path: Path) -> None:
    spec = RunSpec("full/tsd_pc_r101", {"model.roi_head.tsd.margin_cls": 0.5}, "full", "coco2017", 0, None)
    planned = Plan("full", ("table8",), (0,), (PlannedRun(spec, ("table8/tsd_r101_minival",), 16, 1),))
    table = collect("table8", "full", (0,), tmp_path / "runs", planned=planned).table()
    assert set(table[table.row == "tsd_r101_minival"].state) == {f"1 {MISSING}"}
    cascade = cell(table, "cascade", "AP")
    assert (cascade.state, cascade.n, cascade.paper) == (REFERENCE, 0, 42.8)
    with pytest.raises(ValueError, match="has no run for table8/tsd_r101_minival seed 1"):
        collect("table8", "full", (0, 1), tmp_path / "runs", planned=planned)


def test_cli_prints_the_table_and_writes_the_csv(store: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "out" / "table2.csv"
    assert main(["study", "collect", "table2", "--profile", "smoke", "--seeds", "0,1", "--store", str(store),
                 "--csv", str(csv)]) == 0
    printed = capsys.readouterr().out
    assert "TSD w/o PC" in printed and "31.0 ± 12.7" in printed and "38.2" in printed and "+5.0" in printed
    assert "tsd_joint seed 1 failed: RuntimeError: loss is nan" in printed
    written = pd.read_csv(csv)
    assert len(written) == 2 * 3 and list(written.columns[:6]) == ["row", "name", "model", "metric", "state", "n"]
