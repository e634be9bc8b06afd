"""What the study notebooks call: launch a study's runs through the engine, wait for them, and report.

A notebook holds a parameters cell and calls ``run_study_notebook`` (or ``run_overview_notebook``); everything it
shows (the paper-vs-ours table, the figures, the verdicts) comes from the returned report object. Training happens
in the engine's jobs, never in the kernel.
"""
from __future__ import annotations

import html
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import Image, Markdown, display
from pandas.io.formats.style import Styler

from tsd_study.launch.request import StudyRequest, run_study
from tsd_study.runs import Plan, RunState, RunStore
from tsd_study.studies import load_study, study_names

from .collect import StudyResults, collect
from .figures import png_bytes, study_figures
from .verdicts import MIN_EFFECT_AP, ClaimVerdict, Direction, Outcome, effect_directions, judge, verdict_table

# mmengine imports pkg_resources, which setuptools deprecates: noise in every notebook, nothing for our readers.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

NOTEBOOK_STUDIES = ("table1", "table2", "table3", "table4", "table5", "table7", "table9", "fig4", "released_vs_paper")
"""The studies that have a notebook (``notebooks/<name>.ipynb``), in paper order, then the studies beyond the
paper; plus ``overview``."""
OVERVIEW = "overview"
VERDICT_COLOURS = {Outcome.CONFIRMED: "#dafbe1", Outcome.NOT_CONFIRMED: "#ffebe9", Outcome.INCONCLUSIVE: "#fff8c5"}


def studies_in(profile: str, names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The studies (of ``names``, default all) that show at least one row in ``profile``, in paper order."""
    wanted = study_names() if names is None else list(names)
    return tuple(name for name in wanted if load_study(name).rows_for(profile))


@dataclass(frozen=True)
class StudyReport:
    """One study's results in a notebook: ``table``, ``show_figures()`` and ``verdicts``."""

    results: StudyResults
    claims: tuple[ClaimVerdict, ...]

    @property
    def table(self) -> Styler:
        """Per row the model that ran and whether it converged; per metric our mean (± half the 95% t-interval),
        our effect against the reference row (± half its seed-paired interval), the paper's number and effect."""
        return self.results.display_table().style.set_uuid(f"{self.results.study.name}-table")

    @property
    def offset_health(self) -> Styler | str:
        """Where each TSD row's derived proposals sit at its last evaluation (``tsd_study.models.offset_health``)."""
        return health_display(self.results)

    @property
    def verdicts(self) -> Styler:
        """One line per claim: the computed verdict, its basis, and whether the paper's own numbers satisfy it."""
        return style_verdicts(verdict_table(self.claims).drop(columns="study"), f"{self.results.study.name}-verdicts")

    def effect_summary(self, metric: str = "AP") -> Markdown:
        """Each row's effect on ``metric`` against its reference row, grouped by direction (see
        :func:`effect_directions`); e.g. under which choices PC raises AP and under which it lowers it."""
        return Markdown(effect_summary_text(self.results, metric))

    def show_figures(self) -> None:
        """Display every figure of the study (as PNG, whatever matplotlib backend the kernel uses)."""
        for figure in study_figures(self.results).values():
            display(Image(data=png_bytes(figure)))


@dataclass(frozen=True)
class OverviewReport:
    """Every study's verdicts in one table, each linked to its notebook's page."""

    reports: tuple[StudyReport, ...]

    @property
    def verdicts(self) -> Styler:
        lines = verdict_table(tuple(claim for report in self.reports for claim in report.claims))
        lines["study"] = [f'<a href="{name}.html">{html.escape(name)}</a>' for name in lines.study]
        return style_verdicts(lines, "all-verdicts")


HEALTH_LABELS = {"model": "model", "seeds": "seeds", "feature_rms": "RoI feature RMS",
                 "cls_offset_rms_first": "P_c offset RMS, first eval", "cls_offset_rms": "P_c offset RMS",
                 "cls_offset_max": "P_c offset max", "reg_offset_rms": "P_r offset RMS",
                 "reg_offset_max": "P_r offset max", "cls_points_outside": "P_c points outside the image"}


def health_display(results: StudyResults) -> Styler | str:
    """The offset-health table for display (offsets in RoI widths), or a line saying no row measured it."""
    health = results.health_table()
    if health.empty:
        return "No row of this study has derived proposals with a finished run."
    health = health.set_index("row").rename_axis(index=None)[[name for name in HEALTH_LABELS if name in health]]
    formats = {HEALTH_LABELS[name]: "{:.1%}" if name == "cls_points_outside" else "{:.2f}"
               for name in health.columns if name not in ("model", "seeds")}
    return (health.rename(columns=HEALTH_LABELS).style.format(formats, na_rep="")
            .set_uuid(f"{results.study.name}-health"))


def effect_summary_text(results: StudyResults, metric: str = "AP") -> str:
    """Markdown: the rows grouped by the direction of their effect on ``metric``, each with its interval."""
    directions = effect_directions(results, metric)
    minimum = MIN_EFFECT_AP[results.profile]
    if directions.empty:
        return f"No row of this study has an effect on {metric} to judge."
    lines = [f"Against its reference row, each row's effect on {metric} (mean over seeds, seed-paired 95% interval; "
             f"minimum effect {minimum:g} points):"]
    for direction in Direction:
        chosen = directions[directions.direction == direction]
        if chosen.empty:
            continue
        lines.append(f"\n**{direction.value.capitalize()}:**\n")
        for line in chosen.itertuples():
            interval = f" [{line.low:+.1f}, {line.high:+.1f}]" if line.n > 1 else ""
            value = f": {line.effect:+.1f}{interval}" if line.n else ""
            lines.append(f"- {line.row} (against {line.against}){value}")
    return "\n".join(lines)


def style_verdicts(lines: pd.DataFrame, table_id: str) -> Styler:
    """A verdict table for display: full-width text, verdicts coloured, no index (ids fixed, so outputs compare)."""
    return (lines.style.hide(axis="index").set_uuid(table_id)
            .map(lambda verdict: f"background-color: {VERDICT_COLOURS.get(verdict, '#f6f8fa')}", subset=["verdict"])
            .set_properties(**{"text-align": "left"}))


def study_report(study: str, request: StudyRequest, planned: Plan) -> StudyReport:
    """``study``'s runs of ``planned`` collected from the request's run store, and its claims judged."""
    results = collect(study, request.resolved_profile, request.seeds, request.store, planned=planned)
    return StudyReport(results, judge(results))


def study_introduction(study: str) -> Markdown:
    """A study notebook's opening text, from its definition: the title, what the paper says, the claims tested."""
    definition = load_study(study)
    claims = "\n".join(f"- {claim.text}" for claim in definition.claims) or "- none: this study only shows numbers"
    return Markdown(f"## {definition.title}\n\n{definition.summary}\n\n**Claims tested here:**\n\n{claims}")


def run_study_notebook(study: str, **parameters: Any) -> StudyReport:
    """Launch ``study``'s runs through the engine, wait for them, then collect the table and judge the claims.

    ``parameters``: the notebook's parameters cell (``StudyRequest.from_parameters``)."""
    request = StudyRequest.from_parameters(**parameters)
    announce_store(request.store)
    launched = run_study(request, [study])
    report = study_report(study, request, launched.plan)
    print(describe_runs(report.results, launched.states))
    return report


def run_overview_notebook(*, studies: Sequence[str] | None = None, **parameters: Any) -> OverviewReport:
    """Launch the runs of ``studies`` (default: every study the profile shows; each distinct run once), then judge
    every claim. ``parameters``: the rest of the notebook's parameters cell (``StudyRequest.from_parameters``)."""
    request = StudyRequest.from_parameters(**parameters)
    announce_store(request.store)
    names = studies_in(request.profile, studies)
    launched = run_study(request, names)
    reports = tuple(study_report(name, request, launched.plan) for name in names)
    counts = Counter(launched.states.values())
    print(f"{len(names)} studies, profile {request.profile}, seeds {','.join(map(str, request.seeds))}: "
          f"{launched.plan.distinct_runs} distinct runs: "
          + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return OverviewReport(reports)


def announce_store(store: Path | str | None) -> Path:
    """The run store's directory (default: ``default_store()``), after printing it as one line."""
    root = RunStore(store).root
    print(f"run store: {root.resolve()}")
    return root


def describe_runs(results: StudyResults, states: dict[str, RunState]) -> str:
    """One line on the study's runs, then one per failed run with its error's last line."""
    run_ids = {run.run_id for run in results.runs}
    counts = Counter(states[run_id] for run_id in run_ids)
    lines = [f"{results.study.name}, profile {results.profile}, seeds {','.join(map(str, results.seeds))}: "
             f"{len(run_ids)} distinct runs: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))]
    lines += [f"  {row} seed {seed} failed: {error.strip().splitlines()[-1]}"
              for (row, seed), error in results.errors().items()]
    return "\n".join(lines)
