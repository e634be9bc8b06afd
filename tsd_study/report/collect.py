"""A study's runs, read back from the run store, as our numbers and effects beside the paper's.

Every (row, seed) of a study in a profile is one run of the engine's plan. ``collect`` reads each run's state,
metrics, learning curve and offset health; :class:`StudyResults` turns them into per-seed arrays (for paired
verdicts), a long table (for CSV: per row and metric, our mean and 95% t-interval, the paper's number, and the effect
against the row's reference row, ours with its seed-paired interval beside the paper's) and a display table. A cell
without a number says why (pending, failed, missing, ...), never 0. Absolute numbers do not compare across datasets
and scales; effects do: AP effects are differences in points, cost effects (RATIO_METRICS) ratios.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsd_study.metrics.table_metrics import table_metrics
from tsd_study.runs.plan import Plan, plan
from tsd_study.runs.stale import check_not_stale
from tsd_study.runs.store import RunDir, RunState, RunStore
from tsd_study.studies import Row, Study, load_study
from tsd_study.studies.profiles import Profile, get_profile, study_profile

from .stats import Estimate, estimate

MISSING = "missing"
"""A planned run with no directory in the store: never launched there."""
REFERENCE = "paper only"
"""A row the profile does not train: only the paper's number is shown."""
NO_VALUE = "no value"
"""A finished run whose metrics lack this metric (e.g. APs on a dataset without small objects)."""
RATIO_METRICS = ("params_M", "latency_ms")
"""Cost metrics: their effect is a ratio to the reference row (D_s8: 81.1 / 41.8 = 1.94 params), not a difference."""
PLATEAU_FROM, PLATEAU_TO = 0.5, 0.75
"""The learning-curve points (fractions of the schedule) whose AP rise decides convergence."""
HEALTH_COLUMNS = ("feature_rms", "cls_offset_rms", "cls_offset_max", "reg_offset_rms", "reg_offset_max",
                  "cls_points_outside")

TABLE_COLUMNS = ("row", "name", "model", "metric", "state", "n", "ours", "ci_low", "ci_high", "paper", "reference",
                 "effect", "effect_low", "effect_high", "paper_effect", "converged")
DISPLAY_COLUMNS = ("ours", "effect", "paper", "paper effect")


@dataclass(frozen=True)
class RunResult:
    """One run of one row and seed as the store has it: its state, and its table metrics once finished."""

    row_id: str
    seed: int
    run_id: str
    state: RunState | str  # MISSING when the store has no directory for the run
    run_dir: Path
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    curve: tuple[Mapping[str, Any], ...] = ()
    """Learning-curve points (iter, AP, AP50, AP75, offset_health), once finished."""
    offset_health: Mapping[str, float] = field(default_factory=dict)
    """The final evaluation's offset health (TSD models)."""


@dataclass(frozen=True)
class StudyResults:
    """What the store holds for one study in one profile and set of seeds."""

    study: Study
    profile: str
    seeds: tuple[int, ...]
    runs: tuple[RunResult, ...]
    models: Mapping[str, str] = field(default_factory=dict)
    """Each trained row's model in words (what actually ran), by row id."""

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

    def is_ratio(self, metric: str) -> bool:
        return metric in RATIO_METRICS

    def effect_values(self, row_id: str, metric: str) -> np.ndarray:
        """Our effect per seed against the row's reference (a difference, or a ratio for cost metrics); NaN
        everywhere for a row without a reference."""
        reference = self.study.reference_of(row_id)
        if reference is None:
            return np.full(len(self.seeds), math.nan)
        ours, base = self.values(row_id, metric), self.values(reference, metric)
        return ours / base if self.is_ratio(metric) else ours - base

    def effect(self, row_id: str, metric: str) -> Estimate:
        """Our mean effect and its seed-paired 95% t-interval."""
        return estimate(self.effect_values(row_id, metric))

    def paper_effect(self, row_id: str, metric: str) -> float:
        reference = self.study.reference_of(row_id)
        if reference is None:
            return math.nan
        ours, base = self.paper_value(row_id, metric), self.paper_value(reference, metric)
        return ours / base if self.is_ratio(metric) else ours - base

    def plateau_rise(self, row_id: str) -> float:
        """Mean AP rise over seeds between the curve points at 50% and 75% of the schedule (NaN without curves)."""
        rises = [_rise(run.curve) for run in self.runs_of(row_id) if run.state == RunState.FINISHED]
        rises = [rise for rise in rises if not math.isnan(rise)]
        return float(np.mean(rises)) if rises else math.nan

    def converged(self, row_id: str) -> bool | None:
        """Whether the row's learning curve had flattened (the profile's rule); None where it cannot be judged."""
        threshold = get_profile(self.profile).plateau_rise_ap
        rise = self.plateau_rise(row_id)
        if threshold is None or math.isnan(rise):
            return None
        return rise < threshold

    def curve_frame(self) -> pd.DataFrame:
        """The learning curves as long data: one line per row, seed and evaluation (iteration, schedule fraction,
        AP, AP50, AP75 and the offset health where measured)."""
        lines = []
        for row in self.rows:
            for run in self.runs_of(row.id):
                if run.state != RunState.FINISHED or not run.curve:
                    continue
                last = run.curve[-1]["iter"]
                for point in run.curve:
                    health = point.get("offset_health") or {}
                    lines.append({"row": row.id, "name": row.name, "seed": run.seed, "iter": point["iter"],
                                  "fraction": point["iter"] / last,
                                  **{metric: point.get(metric, math.nan) for metric in ("AP", "AP50", "AP75")},
                                  **{name: health.get(name, math.nan) for name in HEALTH_COLUMNS}})
        return pd.DataFrame(lines, columns=["row", "name", "seed", "iter", "fraction", "AP", "AP50", "AP75",
                                            *HEALTH_COLUMNS])

    def health_table(self) -> pd.DataFrame:
        """Offset health of every row that measured it: the mean over seeds of the final evaluation's numbers,
        beside the first evaluation's (so that a displaced start and a drift both show)."""
        curves = self.curve_frame()
        lines = []
        for row in self.rows:
            measured = curves[(curves.row == row.id) & curves.feature_rms.notna()]
            if measured.empty:
                continue
            first = measured[measured.iter == measured.iter.min()]
            final = measured[measured.fraction == 1.0]
            line = {"row": row.name, "model": self.models.get(row.id, ""), "seeds": final.seed.nunique()}
            for name in HEALTH_COLUMNS:
                line[name] = final[name].mean()
            line["cls_offset_rms_first"] = first.cls_offset_rms.mean()
            lines.append(line)
        return pd.DataFrame(lines)

    def row_state(self, row_id: str) -> str:
        """``finished`` when every seed finished, else the count of each state (``1 finished, 2 pending``)."""
        runs = self.runs_of(row_id)
        if not runs:
            return REFERENCE
        counts = Counter(run.state for run in runs)
        if set(counts) == {RunState.FINISHED}:
            return RunState.FINISHED
        return ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))

    def errors(self) -> dict[tuple[str, int], str]:
        """The recorded error of every failed run, by (row, seed)."""
        return {(run.row_id, run.seed): run.error for run in self.runs if run.error}

    def table(self) -> pd.DataFrame:
        """One line per row and metric: the model that ran, state, n, our mean and 95% t-interval, the paper's
        number, the reference row, our effect with its seed-paired interval, the paper's effect, convergence."""
        lines = []
        for row in self.rows:
            state = self.row_state(row.id)
            converged = self.converged(row.id) if row.runs_in(self.profile) else None
            for metric in self.study.metrics:
                ours = estimate(self.values(row.id, metric))
                effect = self.effect(row.id, metric)
                cell_state = NO_VALUE if state == RunState.FINISHED and ours.n == 0 else state
                lines.append((row.id, row.name, self.models.get(row.id, ""), metric, cell_state, ours.n, ours.mean,
                              ours.low, ours.high, self.paper_value(row.id, metric),
                              self.study.reference_of(row.id) or "", effect.mean, effect.low, effect.high,
                              self.paper_effect(row.id, metric), converged))
        return pd.DataFrame(lines, columns=list(TABLE_COLUMNS))

    def _reference_name(self, row_id: str) -> str:
        reference = self.study.reference_of(row_id)
        return "" if reference is None else self.study.row(reference).name

    def display_table(self) -> pd.DataFrame:
        """The table as a person reads it: per metric ``ours ± half-interval``, our effect against the reference
        row (± half its seed-paired interval), the paper's number and the paper's effect; and per row the model
        that ran and whether its learning curve had flattened.

        Rows go down and metrics across, or the other way round when a study has more metrics than rows (Table 9).
        A cell without our number shows its state.
        """
        table = self.table()
        referenced = {self.study.reference_of(row.id) for row in self.rows}
        cells = pd.DataFrame({
            "row": table.name, "metric": table.metric,
            "ours": [_format_ours(line) for line in table.itertuples()],
            "effect": [_format_effect(line, self.is_ratio(line.metric), line.row in referenced)
                       for line in table.itertuples()],
            "paper": ["" if math.isnan(value) else f"{value:g}" for value in table.paper],
            "paper effect": [_format_paper_effect(line, self.is_ratio(line.metric)) for line in table.itertuples()],
        }).melt(id_vars=["row", "metric"], var_name="column", value_name="text")
        rows, metrics = [row.name for row in self.rows], list(self.study.metrics)
        down, across = ("metric", "row") if len(metrics) > len(rows) else ("row", "metric")
        labels = {"row": rows, "metric": metrics}
        shown = cells.pivot(index=down, columns=[across, "column"], values="text")
        shown = shown.reindex(index=labels[down], columns=pd.MultiIndex.from_product([labels[across], DISPLAY_COLUMNS]))
        about = pd.DataFrame({"model": [self.models.get(row.id, "") for row in self.rows],
                              "converged": [_format_converged(self.converged(row.id)) for row in self.rows]},
                             index=rows)
        if any(row.reference for row in self.rows):
            about.insert(0, "effect against", [self._reference_name(row.id) for row in self.rows])
        if down == "row":
            about.columns = pd.MultiIndex.from_product([[""], about.columns])
            shown = pd.concat([about, shown], axis=1)
        else:
            spread = pd.DataFrame({(row, "ours"): about.loc[row] for row in rows}).reindex(
                columns=shown.columns, fill_value="")
            shown = pd.concat([spread.fillna(""), shown])
        return shown.rename_axis(index=None, columns=[None, None])


def _rise(curve: Sequence[Mapping[str, Any]]) -> float:
    """AP at PLATEAU_TO of the schedule minus AP at PLATEAU_FROM (the nearest curve points); NaN without both."""
    if len(curve) < 3:
        return math.nan
    last = curve[-1]["iter"]

    def at(fraction: float) -> float:
        return min(curve, key=lambda point: abs(point["iter"] - fraction * last)).get("AP", math.nan)

    return at(PLATEAU_TO) - at(PLATEAU_FROM)


def collect(study: Study | str, profile: str | Profile, seeds: Sequence[int], store: Path | str | None = None, *,
            planned: Plan | None = None) -> StudyResults:
    """Read every run the engine plans for ``study`` in ``profile`` and ``seeds`` from the run store ``store``
    (default: ``default_store()``).

    ``planned``: a plan that covers the study (e.g. the one its runs were launched with), to skip re-planning.
    Raises StaleRunsError when runs were trained from another version of their config.
    """
    study = load_study(study) if isinstance(study, str) else study
    profile = study_profile(profile)
    seeds = tuple(seeds)
    planned = planned or plan([study], profile, seeds)
    run_ids = {(use, run.spec.seed): run.run_id for run in planned.runs for use in run.uses}
    models = {use.split("/", 1)[1]: run.model for run in planned.runs for use in run.uses
              if use.startswith(f"{study.name}/")}
    run_store = RunStore(store)
    check_not_stale(planned, run_store)
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
    return StudyResults(study=study, profile=profile.name, seeds=seeds, runs=tuple(runs), models=models)


def _read_run(run_dir: RunDir, row_id: str, seed: int) -> RunResult:
    if not (run_dir.path / "spec.json").is_file():
        return RunResult(row_id, seed, run_dir.run_id, MISSING, run_dir.path)
    status = run_dir.status()
    metrics = run_dir.metrics()
    state = run_dir.state()
    finished = state == RunState.FINISHED and metrics is not None
    values = table_metrics(metrics) if finished else {}
    return RunResult(row_id, seed, run_dir.run_id, state, run_dir.path, values, status.error,
                     curve=tuple(metrics.get("curve", ())) if finished else (),
                     offset_health=dict(metrics.get("offset_health") or {}) if finished else {})


def _format_ours(line: Any) -> str:
    """A table line's mean, ± half its interval when it has one; its state when it has no number."""
    if line.n == 0:
        return line.state
    if math.isnan(line.ci_low):
        return _format_number(line.ours)
    return f"{line.ours:.1f} ± {(line.ci_high - line.ci_low) / 2:.1f}"


def _format_effect(line: Any, ratio: bool, is_reference: bool) -> str:
    """Our effect (± half its interval), ``reference`` on a reference row, empty without a number."""
    if not line.reference:
        return "reference" if is_reference and line.n else ""
    if math.isnan(line.effect):
        return ""
    text = f"×{line.effect:.2f}" if ratio else f"{line.effect:+.1f}"
    if not math.isnan(line.effect_low):
        half = (line.effect_high - line.effect_low) / 2
        text += f" ± {half:.2f}" if ratio else f" ± {half:.1f}"
    return text


def _format_paper_effect(line: Any, ratio: bool) -> str:
    if math.isnan(line.paper_effect):
        return ""
    return f"×{line.paper_effect:.2f}" if ratio else f"{line.paper_effect:+.1f}"


def _format_converged(converged: bool | None) -> str:
    return {True: "yes", False: "no", None: ""}[converged]


def _format_number(value: float) -> str:
    """One decimal, as the paper prints AP; empty for NaN."""
    return "" if math.isnan(value) else f"{value:.1f}"
