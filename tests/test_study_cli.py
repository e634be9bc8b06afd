"""`tsd-study study list|plan|run|status`: what they print, and bad input refused before anything is submitted.

In-process calls of the CLI; runtime about 35 s, most of it planning every study (each smoke config loaded once).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tsd_study.cli import main
from tsd_study.launch.sites import SITES_DIR
from tsd_study.runs import RunSpec, RunStore
from tsd_study.runs.store import Attempt

EVALUATION = {"stats": [0.412] + [0.5] * 11, "breakdown": []}
METRICS = {"bbox": EVALUATION, "latency_ms": 12.5, "params_M": 6.04, "iters": 6, "train_seconds": 1.0,
           "eval_seconds": 1.0}


def spec(seed: int) -> RunSpec:
    return RunSpec(config="cpu/tsd_nopc", overrides={}, profile="smoke", dataset="shapes:48", seed=seed, max_iters=6)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_studies_rows_and_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "study", "list")
    assert code == 0
    assert "table2: Table 2: joint training with the sibling head" in out
    lines = out.splitlines()
    assert any(line.split()[:1] == ["tsd_joint"] and line.endswith("trained in: full, cpu, smoke") for line in lines)
    assert any(line.split()[:1] == ["r101"] and line.endswith("trained in: full") for line in lines)


def test_plan_shows_shared_runs_and_what_exists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    store.add(spec(0), ("table2/tsd_nopc",)).write_metrics(METRICS)
    code, out, _ = run_cli(capsys, "study", "plan", "table2", "table3", "--profile", "smoke", "--seeds", "0",
                           "--store", str(store.root))
    assert code == 0
    header, *rows = out.splitlines()
    assert header == (f"table2, table3 in profile smoke, seeds 0: 6 table cells need 5 distinct runs, "
                      f"1 shared between tables; 1 already in {store.root}/ (1 finished)")
    assert [row.split()[1:] for row in rows[:2]] == [
        ["cpu/tsd_nopc", "seed", "0", "finished", "table2/tsd_nopc"],
        ["cpu/tsd_joint", "seed", "0", "new", "table2/tsd_joint,", "table3/tsd_joint"]]
    assert rows[0].startswith(spec(0).run_id) and len(rows) == 5


def test_plan_all_counts_runs_shared_across_the_paper(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(capsys, "study", "plan", "all", "--profile", "smoke", "--seeds", "0,1",
                           "--store", str(tmp_path))
    assert code == 0
    header = out.splitlines()[0]
    assert header.startswith("table1, table2, table3, table4, table5, table6, table7, table8, table9, fig4, "
                             "released_vs_paper in profile smoke, seeds 0,1: 86 table cells need 62 distinct runs, "
                             "8 shared between tables")


def test_status_shows_each_run_its_rows_and_metrics_or_error(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    store.add(spec(0), ("table1/tsd_nopc", "table2/tsd_nopc")).write_metrics(METRICS)
    failed = store.add(spec(1), ("table2/tsd_nopc",))
    failed.update_status(lambda status: (setattr(status, "state", "failed"),
                                         setattr(status, "error", "Traceback ...\nKeyError: 'NoSuchHead'")))
    killed = store.add(spec(2), ("table2/tsd_nopc",))  # marked running, but no process holds its lock
    killed.update_status(lambda status: (setattr(status, "state", "running"), status.attempts.append(
        Attempt(started_at="2026-01-01T00:00:00+00:00", executor="local", job_id="1", host="vm", start_iter=0))))

    code, out, _ = run_cli(capsys, "study", "status", "--store", str(store.root))

    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert lines[spec(0).run_id].split()[1:] == [
        "finished", "smoke", "cpu/tsd_nopc", "seed", "0", "table1/tsd_nopc,", "table2/tsd_nopc", "AP=41.2", "AP50=50.0",
        "AP75=50.0", "latency_ms=12.5", "params_M=6.0"]
    assert lines[spec(1).run_id].endswith("table2/tsd_nopc  error: KeyError: 'NoSuchHead'")
    assert lines[spec(2).run_id].split()[1] == "interrupted"


def test_an_empty_store_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_cli(capsys, "study", "status", "--store", str(tmp_path / "none")) == (
        0, f"no runs in {tmp_path / 'none'}/\n", "")


@pytest.mark.parametrize(("args", "message"), [
    (("table2", "table99"), "unknown study 'table99'; known: table1"),
    (("table2", "--executor", "slurm"), "the slurm executor needs a site profile (--site NAME, e.g. local)"),
    (("table2", "--executor", "slurm", "--site", "mars"), "unknown site 'mars'"),
    (("table2", "--max-concurrent", "0"), "max_concurrent: must be at least 1, got 0"),
])
def test_bad_run_input_is_an_error_before_anything_is_submitted(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                args: tuple[str, ...], message: str) -> None:
    store = tmp_path / "runs"
    code, _, err = run_cli(capsys, "study", "run", *args, "--profile", "smoke", "--seeds", "0", "--store", str(store),
                             "--no-progress")
    assert code == 2
    assert err.startswith("tsd-study: error: ") and message in err
    assert RunStore(store).runs() == []


def test_a_site_with_missing_keys_names_the_file_and_keys(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    site = yaml.safe_load((SITES_DIR / "local.yaml").read_text())
    del site["partition"], site["time_min"]
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    code, _, err = run_cli(capsys, "study", "run", "table2", "--profile", "smoke", "--seeds", "0", "--executor", "slurm",
                           "--site", str(tmp_path / "site.yaml"), "--store", str(tmp_path / "runs"))
    assert code == 2
    assert f"{tmp_path / 'site.yaml'}: missing key 'partition'; missing key 'time_min'" in err


@pytest.mark.parametrize(("args", "message"), [
    (("--profile", "tiny"), "argument --profile: invalid choice: 'tiny'"),
    (("--profile", "smoke", "--seeds", "0,one"), "expected comma-separated integers such as 0,1,2, got '0,one'"),
])
def test_bad_arguments_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                                 message: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["study", "plan", "table2", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
