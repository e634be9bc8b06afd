"""Stale runs: the recipe digest each run records, and runs whose config changed since they trained.

Runtime about 1 minute on a quiet machine (configs loaded in this process and in two fresh ones; no training).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmengine.config import Config

from tsd_study.cli import main
from tsd_study.config_loading import RECIPE_DIGEST_KEY, ConfigError, load_config, recipe_digest
from tsd_study.launch.executors import SUBMITIT_DIR, make_backend, run_plan
from tsd_study.launch.job_environment import JobContext
from tsd_study.launch.training import _build_config
from tsd_study.report.collect import collect
from tsd_study.runs import RunSpec, RunStore, StaleRunsError, plan, stale_runs
from tsd_study.runs.listing import format_plan
from tsd_study.weights import WEIGHTS_VARIABLE

EVALUATION = {"stats": [0.5] * 12, "breakdown": [{"area": "all", "iou": 0.5, "AP": 0.5}]}
METRICS = {"bbox": EVALUATION, "latency_ms": 10.0, "params_M": 6.0, "iters": 6, "train_seconds": 1.0,
           "eval_seconds": 1.0}
FULL_CONFIGS = ("full/faster_rcnn", "full/tsd_pc", "full/tsd_pc_r101_dcn", "full/tsd_pc_mask_rcnn", "full/ds8")
DIGESTS = f"""
import json
from tsd_study.config_loading import RECIPE_DIGEST_KEY, load_config
from tsd_study.runs import plan
from tsd_study.studies import study_names
digests = {{run.run_id: run.recipe_digest for run in plan(study_names(), "cpu", (0,)).runs}}
for config in {FULL_CONFIGS!r}:  # COCO is not here: the digest is taken before the dataset is filled in
    digests[config] = load_config(config, dataset="shapes:48", import_modules=False)[RECIPE_DIGEST_KEY]
print(json.dumps(digests))
"""


def digest(config: str, **kwargs) -> str:
    return load_config(config, import_modules=False, **kwargs)[RECIPE_DIGEST_KEY]


def test_every_process_computes_the_same_digests() -> None:
    digests = [json.loads(subprocess.run([sys.executable, "-c", DIGESTS], capture_output=True,
                                         text=True, check=True).stdout) for _ in range(2)]
    assert digests[0] == digests[1]
    assert all(len(value) == 16 for value in digests[0].values())
    full = [digests[0][config] for config in FULL_CONFIGS]
    assert len(set(full)) == len(full)


@pytest.mark.parametrize("config", ["cpu/tsd_pc", *FULL_CONFIGS])
def test_the_digest_leaves_the_seed_out(config: str) -> None:
    """Planning loads a config without the seed, the job with it; the full configs have no randomness of their
    own, so the seed alone creates it there."""
    assert digest(config, dataset="shapes:48", cfg_options={"randomness.seed": 3}) == digest(config,
                                                                                           dataset="shapes:48")


def test_a_job_computes_the_digest_its_plan_computed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    (planned, *_) = plan(["table2"], "smoke", (4,)).runs
    full = RunSpec(config="full/tsd_pc", overrides={"model.roi_head.tsd.margin_cls": 0.3}, profile="full",
                   dataset="shapes:48", seed=2, max_iters=None)
    planner_digest = digest(full.config, dataset=full.dataset, cfg_options=full.overrides)  # what plan() loads
    for spec, expected in ((planned.spec, planned.recipe_digest), (full, planner_digest)):
        cfg = _build_config(store.add(spec), JobContext.current())
        assert cfg.randomness.seed == spec.seed and cfg[RECIPE_DIGEST_KEY] == expected


def test_the_digest_follows_the_recipe_not_this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = digest("cpu/tsd_pc", dataset="shapes:48")
    assert digest("cpu/tsd_pc", dataset="shapes") == base  # the dataset is the spec's, and its paths this machine's
    monkeypatch.setenv(WEIGHTS_VARIABLE, str(tmp_path / "weights"))
    assert digest("cpu/tsd_pc", dataset="shapes:48") == base
    assert digest("cpu/tsd_pc", dataset="shapes:48", cfg_options={"model.roi_head.tsd.margin_cls": 0.3}) != base
    assert digest("cpu/tsd_pc", dataset="shapes:48", max_iters=10) != base
    assert digest("cpu/tsd_nopc", dataset="shapes:48") != base


def test_a_config_value_without_a_stable_text_is_refused() -> None:
    cfg = Config({"model": {"type": "FasterRCNN", "hook": object()}})
    with pytest.raises(ConfigError, match="type object .* has no stable text for the recipe digest"):
        recipe_digest(cfg)
    assert recipe_digest(Config({"model": {"type": RunSpec}})) != recipe_digest(Config({"model": {"type": RunStore}}))


@pytest.fixture
def finished_table2(tmp_path: Path) -> tuple[RunStore, list]:
    """table2 on the smoke profile with both runs finished, as if trained from their configs as they are now."""
    store = RunStore(tmp_path / "runs")
    planned = plan(["table2"], "smoke", (0,))
    for run in planned.runs:
        run_dir = store.add(run.spec, run.uses)
        run_dir.write_manifest({"spec": run.spec.to_dict(), "recipe_digest": run.recipe_digest})
        run_dir.write_metrics(METRICS)
    return store, list(planned.runs)


def edit_recorded_recipe(store: RunStore, run_id: str, recipe: str | None) -> None:
    run_dir = store.run(run_id)
    run_dir.write_manifest({**run_dir.manifest(), "recipe_digest": recipe})


def test_a_run_from_another_recipe_is_stale(finished_table2: tuple[RunStore, list]) -> None:
    store, (first, second) = finished_table2
    planned = plan(["table2"], "smoke", (0,))
    assert stale_runs(planned, store) == []
    edit_recorded_recipe(store, first.run_id, "0123456789abcdef")
    assert stale_runs(planned, store) == [first]
    assert f"{first.run_id}  {first.spec.config:<28} seed 0   stale" in format_plan(planned, store)
    with pytest.raises(StaleRunsError, match=first.run_id):  # no report from it either
        collect("table2", "smoke", (0,), store.root)
    edit_recorded_recipe(store, first.run_id, None)  # trained before recipes were recorded: taken as it is
    assert stale_runs(planned, store) == []


def test_a_run_that_failed_before_its_first_checkpoint_holds_nothing_stale(
        finished_table2: tuple[RunStore, list]) -> None:
    store, (first, second) = finished_table2
    run_dir = store.run(first.run_id)
    run_dir.metrics_file.unlink()
    edit_recorded_recipe(store, first.run_id, "0123456789abcdef")
    planned = plan(["table2"], "smoke", (0,))
    assert stale_runs(planned, store) == []
    run_dir.work_dir.mkdir(parents=True)
    (run_dir.work_dir / "iter_2.pth").write_bytes(b"PK")  # cut off while torch wrote it: nothing to resume
    assert stale_runs(planned, store) == []
    torch.save({}, run_dir.work_dir / "iter_2.pth")  # a checkpoint of the other recipe: resuming it is refused
    assert stale_runs(planned, store) == [first]


def test_stale_runs_stop_a_launch_before_anything_is_submitted(finished_table2: tuple[RunStore, list],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    store, (first, second) = finished_table2
    unfinished = store.run(second.run_id)  # half trained from another recipe: a launch would submit it
    unfinished.metrics_file.unlink()
    unfinished.work_dir.mkdir(parents=True)
    torch.save({}, unfinished.work_dir / "iter_2.pth")
    edit_recorded_recipe(store, second.run_id, "0123456789abcdef")
    planned = plan(["table2"], "smoke", (0,))
    with pytest.raises(StaleRunsError) as raised:
        run_plan(planned, store, make_backend("local", store), progress=False)
    message = str(raised.value)
    assert "\n" not in message and f"{second.run_id} ({second.spec.config} seed 0)" in message
    assert first.run_id not in message and "--retrain-stale" in message
    assert not any((store.root / SUBMITIT_DIR).rglob("*"))  # no job was submitted
    assert unfinished.state() == "pending" and unfinished.trained_recipe() == "0123456789abcdef"

    for command in (["study", "run", "table2"], ["study", "collect", "table2"],
                    ["reproduce", "--only", "table2", "--out", str(store.root.parent)],
                    ["reproduce", "--only", "table2", "--no-launch", "--out", str(store.root.parent)]):
        assert main([*command, "--profile", "smoke", "--seeds", "0", "--store", str(store.root)]) != 0
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after reproduce's line on what it launches
        assert error.startswith("tsd-study: error: ") and "1 run(s) were trained from another version" in error
        assert (unfinished.work_dir / "iter_2.pth").is_file() and not any((store.root / SUBMITIT_DIR).rglob("*"))
