"""``tsd-study reproduce``: every study of a profile, from training to a browsable report in ``results/<profile>/``.

1. All the runs the selected studies need are launched in one engine call (each distinct run once, as many at a
   time as the executor allows).
2. Each notebook runs under papermill with the parameters injected, into ``notebooks/<name>.ipynb``, one per core
   at a time.
3. Each study's table goes to ``tables/<study>.csv``, all verdicts to ``verdicts.csv``, each run's state and wall
   time to ``runs.csv``, each figure to ``figures/<figure>.png``. The next reproduce into the same directory
   submits the runs longest first by those times, so that the last runs to start are short ones.
4. Each executed notebook is rendered to ``<name>.html`` and ``index.html`` shows every table, figure and verdict
   (unless ``pages=False``: then no HTML and no figure files, as for the nbval reference notebooks).
Every file is written atomically: a killed reproduce leaves the previous file or the new one, never a torn one.
"""
from __future__ import annotations

import html
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import nbformat
import pandas as pd
import papermill
from nbconvert import HTMLExporter
from tqdm import tqdm

from tsd_study.atomic import write_bytes_atomic, write_text_atomic
from tsd_study.launch.request import StudyRequest, run_study
from tsd_study.resources import notebooks_dir
from tsd_study.runs import Plan, RunStore
from tsd_study.runs.store import RunState
from tsd_study.studies.profiles import Profile

from .figures import figure_names, png_bytes, study_figures
from .notebook import NOTEBOOK_STUDIES, OVERVIEW, StudyReport, health_display, studies_in, study_report
from .verdicts import rule_text, verdict_table

NOTEBOOKS = notebooks_dir()
"""The source notebooks: the repository's in a checkout, the package's own when installed from a wheel."""
TEMPLATES = Path(__file__).parent / "templates"
RUNS_TABLE = "runs.csv"
RUNS_COLUMNS = ("run_id", "config", "overrides", "seed", "uses", "state", "wall_s")
KERNEL = "python3"


@dataclass(frozen=True)
class ReproduceResult:
    """What a reproduce call produced: the report directory, notebooks that raised, and runs that did not finish."""

    out: Path
    failed_notebooks: dict[str, str]
    unfinished_runs: dict[str, RunState]

    @property
    def ok(self) -> bool:
        """Every notebook ran and every run finished."""
        return not self.failed_notebooks and not self.unfinished_runs


ALL = "all"
"""``--only all``: every study notebook, also those a profile leaves out of its default reproduce."""


def select_notebooks(only: Sequence[str] | None, profile: Profile) -> tuple[str, ...]:
    """The study notebooks to run: ``only`` (validated; ``all`` for every one), else the profile's default."""
    if not only:
        default = profile.reproduced
        return NOTEBOOK_STUDIES if default is None else tuple(name for name in NOTEBOOK_STUDIES if name in default)
    if list(only) == [ALL]:
        return NOTEBOOK_STUDIES
    unknown = sorted(set(only) - set(NOTEBOOK_STUDIES))
    if unknown:
        raise ValueError(f"--only: no notebook for {', '.join(unknown)}; known: {', '.join(NOTEBOOK_STUDIES)}")
    return tuple(name for name in NOTEBOOK_STUDIES if name in only)


def reproduce(request: StudyRequest, *, only: Sequence[str] | None = None, out: Path | str | None = None,
              pages: bool = True) -> ReproduceResult:
    """Launch, execute, export and render; see the module docstring. Without ``only`` the profile's default studies
    run, with the overview notebook over them; ``only`` (``["all"]`` for every study) skips the overview. The
    notebooks get the request as their parameters (``store = None`` when it names none: the same default store),
    reusing the runs just launched."""
    profile = request.resolved_profile
    selected = select_notebooks(only, profile)
    sections = studies_in(profile.name, None if only is None and profile.reproduced is None else selected)
    out = Path(out) if out is not None else Path("results") / profile.name
    _step(f"{'launching' if request.launch else 'reading, without launching,'} the runs of {', '.join(sections)} ({profile.name} profile, "
          f"seeds {', '.join(map(str, request.seeds))}) into {request.run_store.root.resolve()}")
    launched = run_study(request, sections, show_runs=True, expected_s=run_seconds(out / RUNS_TABLE))
    names = [name for name in selected if name in sections] + ([] if only else [OVERVIEW])
    failed = execute_notebooks(names, NOTEBOOKS, out / "notebooks", replace(request, reuse=True).parameters(),
                               extra={OVERVIEW: {"studies": list(sections)}})
    _step("writing tables and verdicts")
    reports = [study_report(name, request, launched.plan) for name in sections]
    export_tables(reports, out)
    export_runs(launched.plan, request.run_store, out / RUNS_TABLE)
    if pages:
        _step("rendering figures and HTML")
        export_figures(reports, out)
        for name in names:
            render_notebook(out / "notebooks" / f"{name}.ipynb", out / f"{name}.html")
        write_index(reports, profile, request.seeds, out, notebooks=set(names), failures=failed)
    return ReproduceResult(out, failed, launched.unfinished)


def execute_notebooks(names: Sequence[str], source: Path, target: Path, parameters: dict,
                      workers: int | None = None, extra: dict[str, dict] | None = None) -> dict[str, str]:
    """Run each notebook with papermill into ``target``, ``workers`` at a time (default: one per core, as each
    kernel is a process of its own), with ``parameters`` and its own ``extra`` ones; returns {name: error} for those
    that raised.

    A notebook that raises is still written (with its traceback) so its page shows what went wrong.
    """
    for name in names:
        if not (source / f"{name}.ipynb").is_file():
            raise FileNotFoundError(f"{source / name}.ipynb: no such notebook")
    failed = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool, \
            tqdm(total=len(names), desc="notebooks", unit="notebook", file=sys.stderr) as bar:
        running = {pool.submit(_execute_atomically, source / f"{name}.ipynb", target / f"{name}.ipynb",
                               {**parameters, **(extra or {}).get(name, {})}): name for name in names}
        for done in as_completed(running):
            try:
                done.result()
            except papermill.PapermillExecutionError as error:
                failed[running[done]] = f"{error.ename}: {error.evalue}"
            bar.update()
    return {name: failed[name] for name in names if name in failed}


def _execute_atomically(notebook: Path, output: Path, parameters: dict) -> None:
    """papermill saves as it goes: it writes a temporary file beside ``output``, which replaces ``output`` at the end."""
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=".partial.ipynb", dir=output.parent)
    os.close(descriptor)
    try:
        papermill.execute_notebook(notebook, partial, parameters=parameters, kernel_name=KERNEL, progress_bar=False,
                                   cwd=os.getcwd())
    except papermill.PapermillExecutionError:
        _publish(Path(partial), notebook, output)
        raise
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    _publish(Path(partial), notebook, output)


def _publish(partial: Path, notebook: Path, output: Path) -> None:
    """Move the executed notebook into place, its papermill paths naming the source and final files, not temp ones."""
    executed = nbformat.read(partial, as_version=4)
    executed.metadata.papermill.input_path = _shown_path(notebook)
    executed.metadata.papermill.output_path = _shown_path(output)
    write_text_atomic(output, nbformat.writes(executed))
    partial.unlink()


def _shown_path(path: Path) -> str:
    """``path`` relative to the folder holding ``NOTEBOOKS`` (the repository, or the installed package) when it is
    inside it, so that committed notebooks name no machine's paths."""
    resolved = path.resolve()
    return str(resolved.relative_to(NOTEBOOKS.parent)) if resolved.is_relative_to(NOTEBOOKS.parent) else str(path)


def export_tables(reports: Sequence[StudyReport], out: Path) -> None:
    """``tables/<study>.csv`` (the long table of each study) and ``verdicts.csv`` (every claim)."""
    for report in reports:
        table = report.results.table()
        write_text_atomic(out / "tables" / f"{report.results.study.name}.csv", table.to_csv(index=False))
    verdicts = verdict_table(tuple(claim for report in reports for claim in report.claims))
    write_text_atomic(out / "verdicts.csv", verdicts.to_csv(index=False))


def export_runs(planned: Plan, store: RunStore, table: Path) -> None:
    """``runs.csv``: each run of the plan with its config, seed, the rows that use it, its state and wall seconds."""
    rows = []
    for run in planned.runs:
        run_dir = store.run(run.run_id)
        rows.append(dict(run_id=run.run_id, config=run.spec.config, overrides=json.dumps(run.spec.overrides),
                         seed=run.spec.seed, uses=" ".join(run.uses), state=run_dir.state(),
                         wall_s=round(run_dir.status().wall_seconds(), 1)))
    write_text_atomic(table, pd.DataFrame(rows, columns=RUNS_COLUMNS).to_csv(index=False))


def run_seconds(table: Path) -> dict[str, float]:
    """Wall seconds by run id from an earlier ``runs.csv`` (none when there is no such file), for the run order."""
    if not table.is_file():
        return {}
    runs = pd.read_csv(table, dtype={"run_id": str})
    missing = sorted({"run_id", "wall_s"} - set(runs.columns))
    if missing or not pd.api.types.is_numeric_dtype(runs["wall_s"]):
        problem = f"no column {', '.join(missing)}" if missing else "wall_s is not numeric"
        raise ValueError(f"{table}: {problem}; it orders the runs by an earlier reproduce's times, "
                         f"delete it to submit them in plan order")
    return dict(zip(runs["run_id"], runs["wall_s"].astype(float), strict=True))


def export_figures(reports: Sequence[StudyReport], out: Path) -> None:
    """``figures/<figure>.png`` for every figure of every study."""
    for report in reports:
        for name, figure in study_figures(report.results).items():
            write_bytes_atomic(out / "figures" / f"{name}.png", png_bytes(figure))


def render_notebook(notebook: Path, page: Path) -> None:
    """An executed notebook as a self-contained HTML page (JupyterLab's look, images embedded, no CDN scripts)."""
    exporter = HTMLExporter(template_name="lab", template_file=str(TEMPLATES / "notebook_page.html.j2"))
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    write_text_atomic(page, body)


def write_index(reports: Sequence[StudyReport], profile: Profile, seeds: tuple[int, ...], out: Path,
                notebooks: set[str], failures: dict[str, str]) -> None:
    """``index.html``: every verdict first, then per study its table, figures, verdicts and links."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    sections = [dict(name=report.results.study.name, title=report.results.study.title,
                     summary=report.results.study.summary, notebook=report.results.study.name in notebooks,
                     figures=figure_names(report.results.study.name),
                     verdicts=verdict_table(report.claims).to_dict("records"),
                     table_html=report.results.display_table().to_html(classes="study-table", border=0),
                     health_html=_html(health_display(report.results)))
                for report in reports]
    page = environment.get_template("index.html.j2").render(
        profile=profile, seeds=seeds, sections=sections, failures=failures, verdict_rule=rule_text(profile.name),
        overview=OVERVIEW in notebooks,
        verdicts=verdict_table(tuple(claim for report in reports for claim in report.claims)).to_dict("records"))
    write_text_atomic(out / "index.html", page)


def _html(shown: Any) -> str:
    """A Styler as an HTML table, or a plain line (escaped) as a paragraph."""
    return shown.to_html() if hasattr(shown, "to_html") else f'<p class="meta">{html.escape(shown)}</p>'


def _step(message: str) -> None:
    print(f"tsd-study reproduce: {message}", file=sys.stderr, flush=True)
