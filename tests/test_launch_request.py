"""StudyRequest: the command line and a notebook's parameters build the same request, and bad input is one line.

No training; runtime a few seconds (the parser imports mmengine).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tsd_study.cli import build_parser, main
from tsd_study.launch.request import StudyRequest, run_study
from tsd_study.report import run_study_notebook
from tsd_study.runs import RunState


def from_command_line(*args: str) -> StudyRequest:
    return StudyRequest.from_args(build_parser().parse_args(list(args)))


def test_command_line_and_notebook_parameters_build_equal_requests(tmp_path: Path) -> None:
    notebook = StudyRequest.from_parameters(profile="smoke", executor="slurm", site="local", seeds=[0, 1],
                                            store=str(tmp_path), max_concurrent=2)
    common = ("--profile", "smoke", "--executor", "slurm", "--site", "local", "--seeds", "0,1", "--store",
              str(tmp_path), "--max-concurrent", "2")
    assert from_command_line("study", "run", "table2", *common) == notebook
    assert from_command_line("reproduce", *common) == notebook
    assert notebook.seeds == (0, 1) and notebook.store == tmp_path


def test_defaults_and_force_agree() -> None:
    assert from_command_line("reproduce") == StudyRequest.from_parameters() == StudyRequest("cpu")
    assert from_command_line("study", "run", "all", "--profile", "cpu", "--force") == StudyRequest("cpu", reuse=False)
    assert StudyRequest.from_parameters(seeds=3).seeds == (3,)


def test_parameters_give_papermill_a_list_of_seeds_and_round_trip(tmp_path: Path) -> None:
    request = StudyRequest("smoke", seeds=(0, 2), store=tmp_path, dataset="shapes:24")
    parameters = request.parameters()
    assert parameters["seeds"] == [0, 2] and parameters["store"] == str(tmp_path)
    assert StudyRequest.from_parameters(**parameters) == request
    assert StudyRequest("smoke").parameters()["store"] is None  # the notebooks resolve the same default store


@pytest.mark.parametrize(("parameters", "message"), [
    (dict(profile="tiny"), "profile: unknown profile 'tiny'; known: full, cpu, smoke"),
    (dict(seeds="0,1,2"), "seeds: expected an integer or a list of integers such as [0, 1, 2], got '0,1,2'"),
    (dict(seeds=[0, 0]), "seeds: expected distinct integers"),
    (dict(seeds=[]), "seeds: expected distinct integers"),
    (dict(seeds=[0, 1.5]), "seeds: expected distinct integers"),
    (dict(executor="kubernetes"), "executor: unknown executor 'kubernetes'; known: local, slurm"),
    (dict(site="local"), "site: a site profile is for the slurm executor; the local executor takes none"),
    (dict(executor="slurm"), "site: the slurm executor needs a site profile"),
    (dict(max_concurrent=0), "max_concurrent: must be at least 1, got 0"),
    (dict(reuse="no"), "reuse: expected True or False, got 'no'"),
    (dict(launch="no"), "launch: expected True or False, got 'no'"),
    (dict(launch=False, reuse=False), "reuse: False retrains runs, which needs launch=True"),
    (dict(store=3), "store: expected a path or None, got 3"),
    (dict(dataset=48), "dataset: expected a dataset reference or None, got 48"),
])
def test_a_bad_parameter_is_one_line_naming_it(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        StudyRequest.from_parameters(**parameters)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_notebooks_refuse_bad_parameters_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="^site: a site profile is for the slurm executor"):
        run_study_notebook("table2", profile="smoke", site="local")
    assert capsys.readouterr().out == ""  # not even the run store line


def test_the_command_line_refuses_a_site_for_the_local_executor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--site", "local"]) == 2
    assert capsys.readouterr().err == ("tsd-study: error: site: a site profile is for the slurm executor; the local "
                                       "executor takes none\n")


def test_without_launch_the_states_come_from_the_store_and_nothing_trains(tmp_path: Path) -> None:
    """``launch=False`` (``reproduce --no-launch``): report what the store holds; a run never launched stays
    pending and no run directory, job or lock is created."""
    request = from_command_line("reproduce", "--profile", "smoke", "--seeds", "0", "--store", str(tmp_path),
                                "--no-launch")
    assert request == StudyRequest("smoke", seeds=(0,), store=tmp_path, launch=False)
    assert StudyRequest.from_parameters(**request.parameters()) == request
    launched = run_study(request, ["table2"], progress=False)
    assert launched.plan.distinct_runs > 0
    assert set(launched.states.values()) == {RunState.PENDING}
    assert list(tmp_path.iterdir()) == []
