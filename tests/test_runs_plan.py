"""Plans: studies -> distinct runs shared between tables, and every input problem reported before any submission.

Planning loads each distinct config once (about 0.5 s each); the module takes about 20 s.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tsd_study.runs import PlanError, plan
from tsd_study.studies import StudyError, parse_study
from tsd_study.studies.profiles import Profile

SMOKE_DATASET = "shapes:48"


def study_of(rows: list[dict[str, Any]], name: str = "testonly") -> Any:
    """A study definition that exists only in this test."""
    return parse_study({"name": name, "title": name, "summary": "a test study", "metrics": ["AP"], "rows": rows,
                        "claims": []}, source=f"{name}.yaml")


@pytest.fixture(scope="module")
def tables_1_2_4() -> Any:
    return plan(["table1", "table2", "table4"], "smoke", (0,))


def test_a_run_several_tables_need_is_planned_once(tables_1_2_4: Any) -> None:
    (shared,) = tables_1_2_4.shared_runs
    assert shared.uses == ("table1/tsd_nopc", "table2/tsd_nopc", "table4/point_prop")
    assert shared.spec.config == "cpu/tsd_nopc"
    assert tables_1_2_4.cells == 6 + 2 + 6
    assert tables_1_2_4.distinct_runs == 12 == len({run.run_id for run in tables_1_2_4.runs})


def test_specs_take_the_profile_config_dir_dataset_and_schedule(tables_1_2_4: Any) -> None:
    for run in tables_1_2_4.runs:
        assert run.spec.config.startswith("cpu/")
        assert (run.spec.profile, run.spec.dataset, run.spec.max_iters, run.spec.seed) == ("smoke", SMOKE_DATASET, 6, 0)
        assert (run.gpus, run.cpu_tasks) == (0, 1)


def test_longest_first_puts_unknown_runs_first_then_the_longest(tables_1_2_4: Any) -> None:
    first, second, third, *rest = (run.run_id for run in tables_1_2_4.runs)
    expected = {run_id: 10.0 for run_id in rest} | {first: 5.0, third: 60.0}
    ordered = tables_1_2_4.longest_first(expected)
    assert [run.run_id for run in ordered.runs] == [second, third, *rest, first]
    assert (ordered.studies, ordered.seeds, ordered.cells) == (tables_1_2_4.studies, (0,), tables_1_2_4.cells)


def test_each_seed_is_its_own_run() -> None:
    seeded = plan(["table2"], "smoke", seeds=(0, 1, 2))
    assert seeded.distinct_runs == 6
    assert sorted(run.spec.seed for run in seeded.runs) == [0, 0, 1, 1, 2, 2]
    assert len({run.run_id for run in seeded.runs}) == 6


def test_rows_not_trained_in_the_profile_are_skipped() -> None:
    table5 = plan(["table5", "table6"], "smoke", (0,))  # table6 runs at full scale only; table5's ResNets too
    assert sorted(run.spec.config for run in table5.runs) == [
        "cpu/faster_rcnn", "cpu/faster_rcnn_r18", "cpu/tsd_pc", "cpu/tsd_pc_r18"]


def test_without_a_profile_dataset_the_config_names_it() -> None:
    profile = Profile("test", "cpu", None, 2, "no dataset of its own")
    planned = plan([study_of([{"id": "own", "name": "own data", "config": "faster_rcnn",
                               "overrides": {"tsd_dataset": SMOKE_DATASET}}])], profile)
    assert planned.runs[0].spec.dataset == SMOKE_DATASET


def test_every_problem_is_reported_at_once_with_study_row_and_key() -> None:
    broken = study_of([
        {"id": "good", "name": "fine", "config": "tsd_pc"},
        {"id": "bad_switch", "name": "margin out of range", "config": "tsd_pc",
         "overrides": {"model.roi_head.tsd.margin_cls": 1.5}},
        {"id": "no_config", "name": "missing file", "config": "no_such_config"},
        {"id": "bad_tasks", "name": "zero processes", "config": "faster_rcnn", "overrides": {"tsd_cpu_tasks": 0}},
    ], name="broken")
    with pytest.raises(PlanError) as error:
        plan([broken, "table99"], "smoke", (0,))
    message = str(error.value)
    assert "unknown study 'table99'" in message
    assert "broken/bad_switch (cpu/tsd_pc with overrides {'model.roi_head.tsd.margin_cls': 1.5})" in message
    assert "margin_cls: margin must lie in [0, 1], got 1.5" in message
    assert "broken/no_config (cpu/no_such_config): cpu/no_such_config: no such config file" in message
    assert "broken/bad_tasks" in message and "tsd_cpu_tasks: expected an integer >= 1, got 0" in message
    assert "broken/good" not in message


def test_a_profile_whose_dataset_is_missing_fails_planning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the full profile's COCO 2017 is looked for under ./data/coco
    with pytest.raises(PlanError, match=r"table2/tsd_nopc \(full/tsd_nopc\): .*data/coco: COCO 2017 root does not "):
        plan(["table2"], "full", (0,))


def test_unknown_profile_and_repeated_seeds_are_refused() -> None:
    with pytest.raises(StudyError, match="unknown profile 'tiny'; known: full, cpu, smoke"):
        plan(["table2"], "tiny", (0,))
    with pytest.raises(PlanError, match=r"seeds: expected distinct integers, got \[1, 1\]"):
        plan(["table2"], "smoke", seeds=(1, 1))


def test_planning_and_launching_import_neither_torch_nor_mmdetection() -> None:
    """The launcher stays light: configs are checked without their custom imports and the submitted callable is
    pickled without the training code (the job process imports it)."""
    script = ("import pickle, sys; from tsd_study.runs import plan; from tsd_study.launch.train_job import TrainJob; "
              "plan(['table2'], 'smoke', (0,)); pickle.dumps(TrainJob()); "
              "print(sorted(name for name in ('torch', 'mmdet', 'mmengine.runner') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
