"""The pieces of ``tsd-study reproduce`` that need no training: notebook execution, exports, pages, the index.

Runtime: about 15 s (two papermill kernels).
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tsd_study.report import NOTEBOOK_STUDIES, StudyReport, judge
from tsd_study.report.figures import figure_names
from tsd_study.report.reproduce import (export_figures, export_runs, export_tables, execute_notebooks,
                                        render_notebook, run_seconds, select_notebooks, write_index)
from tsd_study.runs import Attempt, RunStore, plan
from tsd_study.studies.profiles import get_profile

from report_fixtures import fabricated


def write_notebook(path: Path, *sources: str) -> None:
    """A notebook whose first cell is tagged ``parameters``."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_only_names_notebooks_that_exist_and_the_default_is_the_profiles() -> None:
    cpu, full = get_profile("cpu"), get_profile("full")
    assert select_notebooks(["table9", "table1"], cpu) == ("table1", "table9")
    assert select_notebooks(["all"], cpu) == NOTEBOOK_STUDIES
    assert select_notebooks(None, full) == NOTEBOOK_STUDIES  # the full profile reproduces everything
    assert select_notebooks(None, cpu) == tuple(name for name in NOTEBOOK_STUDIES if name in cpu.reproduced)
    with pytest.raises(ValueError, match="--only: no notebook for table6; known: table1, "):
        select_notebooks(["table6"], cpu)


def test_notebooks_run_with_injected_parameters_and_failures_are_kept(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "executed"
    source.mkdir()
    write_notebook(source / "good.ipynb", "store = 'runs'", "print(f'store is {store}')")
    write_notebook(source / "bad.ipynb", "store = 'runs'", "raise RuntimeError(f'no runs in {store}')")
    failed = execute_notebooks(["good", "bad"], source, target, {"store": "elsewhere"})
    assert failed == {"bad": "RuntimeError: no runs in elsewhere"}
    good = nbformat.read(target / "good.ipynb", as_version=4)
    assert good.cells[-1].outputs[0].text == "store is elsewhere\n"
    assert good.metadata.papermill.output_path == str(target / "good.ipynb")  # not papermill's temporary file
    bad = nbformat.read(target / "bad.ipynb", as_version=4)
    assert any(output.output_type == "error" for cell in bad.cells for output in cell.get("outputs", []))
    assert sorted(path.name for path in target.iterdir()) == ["bad.ipynb", "good.ipynb"]  # no partial files left
    render_notebook(target / "good.ipynb", tmp_path / "good.html")
    assert "store is elsewhere" in (tmp_path / "good.html").read_text()


def test_notebooks_run_side_by_side(tmp_path: Path) -> None:
    """Each of two notebooks waits for the other's mark: they finish only if they run at the same time."""
    wait = ("import pathlib, time\n"
            "pathlib.Path(folder, me).touch()\n"
            "deadline = time.monotonic() + 60\n"
            "while not pathlib.Path(folder, other).exists():\n"
            "    assert time.monotonic() < deadline, 'ran alone'\n"
            "    time.sleep(0.1)")
    for me, other in (("a", "b"), ("b", "a")):
        write_notebook(tmp_path / f"{me}.ipynb", f"folder, me, other = '', {me!r}, {other!r}", wait)
    assert execute_notebooks(["a", "b"], tmp_path, tmp_path / "executed", {"folder": str(tmp_path)}, workers=2) == {}


def test_a_missing_notebook_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="table1.ipynb: no such notebook"):
        execute_notebooks(["table1"], tmp_path, tmp_path / "out", {})


@pytest.fixture
def reports() -> list[StudyReport]:
    results = [fabricated(name) for name in ("table1", "table9", "fig4")]
    return [StudyReport(result, judge(result)) for result in results]


def test_exports_write_every_table_verdict_and_figure(tmp_path: Path, reports: list[StudyReport]) -> None:
    export_tables(reports, tmp_path)
    export_figures(reports, tmp_path)
    table1 = pd.read_csv(tmp_path / "tables" / "table1.csv")
    assert len(table1) == 6 * 4 and table1.state.eq("finished").all()
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    assert list(verdicts.study) == ["table1"] * 3 + ["table9"] * 3
    assert sorted(path.stem for path in (tmp_path / "figures").iterdir()) == sorted(
        name for report in reports for name in figure_names(report.results.study.name))


def test_runs_table_round_trips_the_wall_times_that_order_the_next_reproduce(tmp_path: Path) -> None:
    planned, store, table = plan(["table2"], "smoke", (0,)), RunStore(tmp_path / "runs"), tmp_path / "runs.csv"
    assert run_seconds(table) == {}
    timed, untouched = (store.add(run.spec, run.uses) for run in planned.runs)
    timed.update_status(lambda status: status.attempts.append(Attempt(
        "2026-01-01T00:00:00+00:00", "local", "7", "vm", 0, "2026-01-01T00:02:05+00:00", "failed")))
    export_runs(planned, store, table)
    runs = pd.read_csv(table)
    assert list(runs.uses) == [" ".join(run.uses) for run in planned.runs]
    assert list(runs.state) == ["pending", "pending"]
    assert run_seconds(table) == {timed.run_id: 125.0, untouched.run_id: 0.0}
    table.write_text("run_id,seconds\nabc,3\n")
    with pytest.raises(ValueError, match="runs.csv: no column wall_s; .* delete it"):
        run_seconds(table)


def test_index_shows_every_section_escaped_with_failures_first(tmp_path: Path, reports: list[StudyReport]) -> None:
    write_index(reports, get_profile("cpu"), (0, 1), tmp_path, notebooks={"table1", "table9", "fig4"},
                failures={"table9": "ValueError: <boom>"})
    page = (tmp_path / "index.html").read_text()
    assert re.findall(r'<section class="study" id="(\w+)">', page) == ["table1", "table9", "fig4"]
    assert page.count('class="dataframe study-table"') == 3
    assert page.count('<img class="figure"') == 2 + 3 + 2  # effects and curves; Table 9: Fig. 6, heatmap, curves
    assert "dhead.AP &gt; sibling.AP" in page and "dhead.AP > sibling.AP" not in page
    assert "ValueError: &lt;boom&gt;" in page
    assert page.index("Notebooks that failed") < page.index('id="verdicts"')


def test_index_links_only_the_notebooks_that_ran(tmp_path: Path, reports: list[StudyReport]) -> None:
    write_index(reports, get_profile("cpu"), (0,), tmp_path, notebooks={"table1"}, failures={})
    page = (tmp_path / "index.html").read_text()
    assert page.count(">notebook page</a>") == 1 and 'href="table1.html"' in page
    assert "Notebooks that failed" not in page
    assert 'href="overview.html"' not in page  # reproduce --only renders no overview
    write_index(reports, get_profile("cpu"), (0,), tmp_path, notebooks={"table1", "overview"}, failures={})
    assert 'href="overview.html"' in (tmp_path / "index.html").read_text()
