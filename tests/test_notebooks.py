"""The study notebooks: their shape, and nbval against reference copies executed in the smoke profile.

``tests/smoke_reference/`` holds every notebook executed by papermill with smoke parameters, with the tables
(CSV) and verdicts they showed. Regenerate it from the repository root after changing a notebook or what it shows
(the smoke runs train into the gitignored ``runs/``, once):

    .venv/bin/tsd-study reproduce --profile smoke --seeds 0 --no-pages --out tests/smoke_reference

``test_nbval`` runs ``pytest --nbval`` on copies of those notebooks in one session directory, so all of them share
one smoke run store and each distinct run trains once (tests/test_browser.py reuses the same store). Outputs are
compared after tests/nbval_sanitize.cfg: progress bars, object addresses and decimal numbers are masked, so a
table that loses a row or a column fails there, while the numbers themselves are compared with the reference
tables below; verdict cells (tagged ``nbval-ignore-output``) are compared with the reference verdicts. The smoke
runs are deterministic on CPU (one seed, one thread per job), so AP must match to AP_TOLERANCE.

Runtime: the structure tests take seconds; the nbval session trains the 20 distinct smoke runs (about 15 minutes on
2 busy cores) unless test_browser.py already did.
"""
from __future__ import annotations

import ast
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tsd_study.report import NOTEBOOK_STUDIES, collect, judge, verdict_table
from tsd_study.report.notebook import OVERVIEW, announce_store, studies_in
from tsd_study.runs.store import STORE_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = ROOT / "tests" / "smoke_reference"
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
NAMES = (*NOTEBOOK_STUDIES, OVERVIEW)
PARAMETERS = {"profile": "cpu", "executor": "local", "site": None, "seeds": [0, 1, 2], "dataset": None,
              "store": None, "reuse": True, "max_concurrent": None, "launch": True}
CELL_TIMEOUT_S = 3600  # the first notebook of the session trains the runs it needs
AP_TOLERANCE = 0.05
"""How far our AP-like number may be from the reference's: half the unit of the place the tables print AP (one
decimal), so a change a reader could see in a table fails. Here the smoke runs reproduce the references exactly; the
margin leaves room for another CPU's float kernels, which can move a detection's score across another's in 6-iteration
models whose AP is a few hundredths."""
ABSOLUTE_TOLERANCE = {"params_M": 1e-6}
"""Per metric, how far our number may be from the reference's, where it is not AP_TOLERANCE."""
LATENCY_FACTOR = 10.0
"""Latency depends on the machine and its load: only its order of magnitude is compared."""
COMPARED_COLUMNS = ("ours", "effect")
"""The numbers of a reference table that come from our runs (with one seed, the intervals are empty)."""
DECIMAL = re.compile(r"[-+]?\d+\.\d+")
"""A printed decimal number, as tests/nbval_sanitize.cfg masks them."""


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def cells_tagged(notebook: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]


def test_every_notebook_and_reference_exists() -> None:
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    assert sorted(path.stem for path in (REFERENCE / "notebooks").glob("*.ipynb")) == sorted(NAMES)
    assert sorted(path.stem for path in (REFERENCE / "tables").glob("*.csv")) == sorted(studies_in("smoke"))


@pytest.mark.parametrize("name", NAMES)
def test_reference_was_made_with_the_default_store(name: str) -> None:
    """The reference notebooks run as they are under nbval: their store must be None, the default store, which the
    nbval session sets to its smoke store through $TSD_STUDY_STORE, not the store of whoever regenerated them."""
    (injected,) = cells_tagged(read(REFERENCE / "notebooks" / f"{name}.ipynb"), "injected-parameters")
    assignments = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(injected.source).body}
    assert assignments["store"] == PARAMETERS["store"], f"regenerate {REFERENCE} with the default --store"


def test_notebooks_print_their_run_store(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    monkeypatch.setenv(STORE_VARIABLE, str(tmp_path / "runs"))
    assert announce_store(None) == tmp_path / "runs"
    assert capsys.readouterr().out == f"run store: {(tmp_path / 'runs').resolve()}\n"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_thin_with_one_parameters_cell(name: str) -> None:
    notebook = read(NOTEBOOKS / f"{name}.ipynb")
    assert notebook.metadata.kernelspec.name == "python3"
    (parameters,) = cells_tagged(notebook, "parameters")
    assignments = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(parameters.source).body}
    assert assignments == PARAMETERS | ({"studies": None} if name == OVERVIEW else {})
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell is parameters:
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                assert isinstance(node, ast.ImportFrom) and node.module == "tsd_study.report", cell.source
        assert not cell.outputs, f"{name}: committed with outputs; the executed copies live in {REFERENCE}"


@pytest.mark.parametrize("name", NAMES)
def test_reference_was_regenerated_from_the_current_notebook(name: str) -> None:
    source = [cell.source for cell in read(NOTEBOOKS / f"{name}.ipynb").cells]
    reference = read(REFERENCE / "notebooks" / f"{name}.ipynb")
    (injected,) = cells_tagged(reference, "injected-parameters")
    assert "profile = \"smoke\"" in injected.source
    assert [cell.source for cell in reference.cells if cell is not injected] == source, (
        f"{name}.ipynb changed since tests/smoke_reference was made: regenerate it (see this module's docstring)")


def write_notebook(path: Path, sources: list[str], executed_sources: list[str] | None = None) -> None:
    """A notebook of ``sources`` whose stored outputs come from executing ``executed_sources`` (default: the same)."""
    executed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)
                                               for source in executed_sources or sources])
    executed.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(executed, allow_errors=True).execute()
    for cell, source in zip(executed.cells, sources):
        cell.source = source
    nbformat.write(executed, path)


def nbval(directory: Path, timeout_s: int = 120, store: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``pytest --nbval`` with our sanitizers over the notebooks in ``directory``, the kernel in this environment
    (with ``store`` as its default run store)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", f"--nbval-sanitize-with={SANITIZE}",
         f"--nbval-cell-timeout={timeout_s}", "-p", "no:cacheprovider", "-q", f"--rootdir={directory}",
         *sorted(str(path) for path in directory.glob("*.ipynb"))],
        cwd=directory, capture_output=True, text=True, check=False,
        env=os.environ | ({STORE_VARIABLE: str(store)} if store else {}))


TABLE = "import pandas as pd\npd.DataFrame({{'AP': [{values}]}}, index=[{rows}])"


@pytest.mark.parametrize(("executed", "passes"), [
    (TABLE.format(values="70.25, 3.5", rows="'a', 'b'"), True),  # other numbers: a legitimate difference
    (TABLE.format(values="1.0, 2.0, 3.0", rows="'a', 'b', 'c'"), False),  # the reference had one row more
    (TABLE.format(values="1.0", rows="'a'"), False),  # one row fewer
])
def test_sanitizers_mask_numbers_but_not_rows(tmp_path: Path, executed: str, passes: bool) -> None:
    write_notebook(tmp_path / "table.ipynb", [TABLE.format(values="1.0, 2.0", rows="'a', 'b'")], [executed])
    result = nbval(tmp_path)
    assert (result.returncode == 0) == passes, result.stdout[-3000:]


def test_sanitizers_drop_the_run_store_line(tmp_path: Path) -> None:
    """A reference made before the notebooks printed their store, or with another store, still compares."""
    printed = "print('run store: /here/runs')\nprint('2 runs finished')"
    write_notebook(tmp_path / "store.ipynb", [printed, printed],
                   ["print('2 runs finished')", printed.replace("/here", "/elsewhere")])
    result = nbval(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_notebook_that_raises_fails_nbval(tmp_path: Path) -> None:
    write_notebook(tmp_path / "raises.ipynb", ["raise RuntimeError('collect failed')"], ["None"])
    result = nbval(tmp_path)
    assert result.returncode != 0 and "collect failed" in result.stdout


class NbvalSession(NamedTuple):
    store: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def nbval_session(smoke_directory: Path) -> NbvalSession:
    """nbval over copies of the reference notebooks, whose default store is the session's shared smoke store."""
    directory, store = smoke_directory / "nbval", smoke_directory / "runs"
    shutil.copytree(REFERENCE / "notebooks", directory)
    return NbvalSession(store, nbval(directory, timeout_s=CELL_TIMEOUT_S, store=store))


@pytest.mark.slow
def test_nbval(nbval_session: NbvalSession) -> None:
    result = nbval_session.result
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def within_tolerance(metric: str, ours: float, reference: float) -> bool:
    if math.isnan(reference):
        return math.isnan(ours)
    if metric == "latency_ms":
        return reference / LATENCY_FACTOR <= ours <= reference * LATENCY_FACTOR
    return abs(ours - reference) <= ABSOLUTE_TOLERANCE.get(metric, AP_TOLERANCE)


def far_numbers(ours: pd.DataFrame, reference: pd.DataFrame) -> list[tuple]:
    """(row, metric, column, ours, reference) for each number of COMPARED_COLUMNS beyond its tolerance."""
    return [(line.row, line.metric, column, getattr(line, column), getattr(expected, column))
            for line, expected in zip(ours.itertuples(), reference.itertuples()) for column in COMPARED_COLUMNS
            if not within_tolerance(line.metric, getattr(line, column), getattr(expected, column))]


def same_basis(ours: str, reference: str) -> bool:
    """The same text with decimals masked, and each decimal within AP_TOLERANCE of the reference's."""
    return (DECIMAL.sub("NUM", ours) == DECIMAL.sub("NUM", reference)
            and all(abs(float(number) - float(expected)) <= AP_TOLERANCE
                    for number, expected in zip(DECIMAL.findall(ours), DECIMAL.findall(reference))))


def verdict_differences(ours: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Each claim whose verdict, paper column or basis (see ``same_basis``) differs from the reference's."""
    return [f"{line.study}: {line.claim} {line.verdict!r} ({line.basis}; paper: {line.paper}), reference "
            f"{expected.verdict!r} ({expected.basis}; paper: {expected.paper})"
            for line, expected in zip(ours.itertuples(), reference.itertuples())
            if (line.verdict, line.paper) != (expected.verdict, expected.paper)
            or not same_basis(line.basis, expected.basis)]


def reference_table(study: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "tables" / f"{study}.csv", keep_default_na=False, na_values=[""])


def reference_verdicts() -> pd.DataFrame:
    return pd.read_csv(REFERENCE / "verdicts.csv", keep_default_na=False)


def test_reference_comparisons_catch_a_small_change() -> None:
    """The comparisons below pass the references against themselves and fail on a change of 0.1 AP."""
    table, verdicts = reference_table("table4"), reference_verdicts()
    assert not far_numbers(table, table) and not verdict_differences(verdicts, verdicts)
    changed = table.copy()
    changed.loc[(changed.row == "pc_point_point") & (changed.metric == "AP"), "ours"] += 0.1
    assert [line[:3] for line in far_numbers(changed, table)] == [("pc_point_point", "AP", "ours")]
    nudged = verdicts.copy()
    nudged.loc[1, "basis"] = nudged.loc[1, "basis"].replace("+0.94", "+1.04")
    flipped = verdicts.copy()
    flipped.loc[0, "verdict"] = "not confirmed"
    assert len(verdict_differences(nudged, verdicts)) == len(verdict_differences(flipped, verdicts)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("study", studies_in("smoke"))
def test_numbers_match_the_reference_tables(nbval_session: NbvalSession, study: str) -> None:
    ours = collect(study, "smoke", (0,), nbval_session.store).table()
    reference = reference_table(study)
    assert list(zip(ours.row, ours.metric)) == list(zip(reference.row, reference.metric))
    assert list(ours.state) == list(reference.state)
    far = far_numbers(ours, reference)
    assert not far, f"(row, metric, column, ours, reference) beyond tolerance: {far}"


@pytest.mark.slow
def test_verdicts_match_the_reference(nbval_session: NbvalSession) -> None:
    claims = tuple(claim for study in studies_in("smoke")
                   for claim in judge(collect(study, "smoke", (0,), nbval_session.store)))
    ours, reference = verdict_table(claims), reference_verdicts()
    assert list(zip(ours.study, ours.claim)) == list(zip(reference.study, reference.claim))
    differences = verdict_differences(ours, reference)
    assert not differences, "\n".join(differences)
