"""A study's runs, read back from the run store, as our numbers beside the paper's.

Every (row, seed) of a study in a profile is one run of the engine's plan. ``collect`` reads each run's state and
metrics; :class:`StudyResults` turns them into per-seed arrays (for paired verdicts), a long table (for CSV: our
mean, 95% t-interval, n, the paper's number and the difference, per row and metric) and a display table. A cell
without a number says why (pending, failed, missing, ...), never 0.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsd_study.metrics.table_metrics import table_metrics
from tsd_study.runs.listing import run_state
from tsd_study.runs.plan import Plan, plan
from tsd_study.runs.store import RunDir, RunStore
from tsd_study.studies import Row, Study, load_study
from tsd_study.studies.profiles import Profile, get_profile

from .stats import estimate

FINISHED = "finished"
MISSING = "missing"
"""A planned run with no directory in the store: never launched there."""
REFERENCE = "paper only"
"""A row the profile does not train: only the paper's number is shown."""
NO_VALUE = "no value"
"""A finished run whose metrics lack this metric (e.g. APs on a dataset without small objects)."""

TABLE_COLUMNS = ("row", "name", "metric", "state", "n", "ours", "ci_low", "ci_high", "paper", "diff")
DISPLAY_COLUMNS = ("ours", "paper", "diff")


@dataclass(frozen=True)
class RunResult:
    """One run of one row and seed as the store has it: its state, and its table metrics once finished."""

    row_id: str
    seed: int
    run_id: str
    state: str
    run_dir: Path
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class StudyResults:
    """What the store holds for one study in one profile and set of seeds."""

    study: Study
    profile: str
    seeds: tuple[int, ...]
    runs: tuple[RunResult, ...]

    @property
    def rows(self) -> tuple[Row, ...]:
        """The study's rows in this profile, in paper order."""
        return self.study.rows_for(self.profile)

    @property
    def trained_row_ids(self) -> set[str]:
        """The rows this profile trains (the others are the paper's reference rows)."""
        return {row.id for row in self.rows if row.runs_in(self.profile)}

    def runs_of(self, row_id: str) -> tuple[RunResult, ...]:
        """The row's runs, one per seed in seed order."""
        return tuple(run for run in self.runs if run.row_id == row_id)

    def values(self, row_id: str, metric: str) -> np.ndarray:
        """Our value per seed (NaN where the run has no number); derived metrics are computed seed by seed."""
        if metric in self.study.derived:
            return np.asarray(self.study.derived[metric].evaluate(lambda _, name: self.values(row_id, name)))
        runs = self.runs_of(row_id)
        if not runs:
            return np.full(len(self.seeds), math.nan)
        return np.array([run.metrics.get(metric, math.nan) for run in runs], dtype=float)

    def paper_value(self, row_id: str, metric: str) -> float:
        """The paper's number (NaN where the paper gives none); derived metrics are computed from the paper's."""
        if metric in self.study.derived:
            return float(self.study.derived[metric].evaluate(lambda _, name: self.paper_value(row_id, name)))
        return float(self.study.row(row_id).paper.get(metric, math.nan))

    def row_state(self, row_id: str) -> str:
        """``finished`` when every seed finished, else the count of each state (``1 finished, 2 pending``)."""
        runs = self.runs_of(row_id)
        if not runs:
            return REFERENCE
        counts = Counter(run.state for run in runs)
        if set(counts) == {FINISHED}:
            return FINISHED
        return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))

    def errors(self) -> dict[tuple[str, int], str]:
        """The recorded error of every failed run, by (row, seed)."""
        return {(run.row_id, run.seed): run.error for run in self.runs if run.error}

    def table(self) -> pd.DataFrame:
        """One line per row and metric: state, n, our mean and 95% t-interval, the paper's number, ours - paper."""
        lines = []
        for row in self.rows:
            state = self.row_state(row.id)
            for metric in self.study.metrics:
                ours = estimate(self.values(row.id, metric))
                paper = self.paper_value(row.id, metric)
                cell_state = NO_VALUE if state == FINISHED and ours.n == 0 else state
                lines.append((row.id, row.name, metric, cell_state, ours.n, ours.mean, ours.low, ours.high, paper,
                              ours.mean - paper))
        return pd.DataFrame(lines, columns=list(TABLE_COLUMNS))

    def display_table(self) -> pd.DataFrame:
        """The table as a person reads it: ``ours ± half-interval``, the paper's number and the difference.

        Rows go down and metrics across, or the other way round when a study has more metrics than rows (Table 9).
        A cell without our number shows its state.
        """
        table = self.table()
        cells = pd.DataFrame({
            "row": table.name, "metric": table.metric,
            "ours": [_format_ours(line) for line in table.itertuples()],
            "paper": ["" if math.isnan(value) else f"{value:g}" for value in table.paper],
            "diff": [_format_number(value, signed=True) for value in table["diff"]],
        }).melt(id_vars=["row", "metric"], var_name="column", value_name="text")
        rows, metrics = [row.name for row in self.rows], list(self.study.metrics)
        down, across = ("metric", "row") if len(metrics) > len(rows) else ("row", "metric")
        labels = {"row": rows, "metric": metrics}
        shown = cells.pivot(index=down, columns=[across, "column"], values="text")
        shown = shown.reindex(index=labels[down], columns=pd.MultiIndex.from_product([labels[across], DISPLAY_COLUMNS]))
        return shown.rename_axis(index=None, columns=[None, None])


def study_profile(profile: str | Profile, dataset: str | None = None) -> Profile:
    """The profile called ``profile``, with its dataset replaced by ``dataset`` when one is given."""
    resolved = get_profile(profile) if isinstance(profile, str) else profile
    return replace(resolved, dataset=dataset) if dataset else resolved


def collect(study: Study | str, profile: str | Profile, seeds: Sequence[int], store: Path | str, *,
            planned: Plan | None = None) -> StudyResults:
    """Read every run the engine plans for ``study`` in ``profile`` and ``seeds`` from the run store ``store``.

    ``planned``: a plan that covers the study (e.g. the one its runs were launched with), to skip re-planning.
    """
    study = load_study(study) if isinstance(study, str) else study
    profile = study_profile(profile)
    seeds = tuple(seeds)
    planned = planned or plan([study], profile, seeds)
    run_ids = {(use, run.spec.seed): run.run_id for run in planned.runs for use in run.uses}
    run_store = RunStore(store)
    runs = []
    for row in study.rows_for(profile.name):
        if not row.runs_in(profile.name):
            continue
        for seed in seeds:
            key = (f"{study.name}/{row.id}", seed)
            if key not in run_ids:
                raise ValueError(f"the plan for profile {planned.profile!r}, seeds {planned.seeds} has no run for "
                                 f"{key[0]} seed {seed}")
            runs.append(_read_run(run_store.run(run_ids[key]), row.id, seed))
    return StudyResults(study=study, profile=profile.name, seeds=seeds, runs=tuple(runs))


def _read_run(run_dir: RunDir, row_id: str, seed: int) -> RunResult:
    if not (run_dir.path / "spec.json").is_file():
        return RunResult(row_id, seed, run_dir.run_id, MISSING, run_dir.path)
    status = run_dir.status()
    metrics = run_dir.metrics()
    state = run_state(run_dir)
    values = table_metrics(metrics) if state == FINISHED and metrics is not None else {}
    return RunResult(row_id, seed, run_dir.run_id, state, run_dir.path, values, status.error)


def _format_ours(line: Any) -> str:
    """A table line's mean, ± half its interval when it has one; its state when it has no number."""
    if line.n == 0:
        return line.state
    if math.isnan(line.ci_low):
        return _format_number(line.ours)
    return f"{line.ours:.1f} ± {(line.ci_high - line.ci_low) / 2:.1f}"


def _format_number(value: float, signed: bool = False) -> str:
    """One decimal, as the paper prints AP; empty for NaN."""
    if math.isnan(value):
        return ""
    return f"{value:+.1f}" if signed else f"{value:.1f}"
