"""Plain-text views for ``tsd-study study list|plan|status``: studies and their rows, plans, the run store."""
from __future__ import annotations

from collections.abc import Iterable

from tsd_study.metrics.table_metrics import table_metrics
from tsd_study.studies import load_study, study_names
from tsd_study.studies.profiles import PROFILES

from .plan import Plan
from .stale import stale_runs
from .store import RunDir, RunState, RunStore

SUMMARY_METRICS = ("AP", "AP50", "AP75", "mask_AP", "latency_ms", "params_M")


def format_studies() -> str:
    """Every study with its rows, each with its config and the profiles that train it."""
    lines = []
    for name in study_names():
        study = load_study(name)
        lines.append(f"{name}: {study.title}")
        for row in study.rows:
            profiles = [profile for profile in PROFILES if study.rows_for(profile) and row.runs_in(profile)]
            trained = f"trained in: {', '.join(profiles)}" if profiles else "paper reference only"
            lines.append(f"  {row.id:<18} {row.name:<40} {row.config or '-':<24} {trained}")
    return "\n".join(lines)


def format_plan(plan: Plan, store: RunStore) -> str:
    """The distinct runs of a plan, what shares them, and their state in ``store`` (``new`` when absent, ``stale``
    when trained from another version of its config)."""
    stale = {run.run_id for run in stale_runs(plan, store)}
    states = ["stale" if run.run_id in stale else _stored_state(store.run(run.run_id)) for run in plan.runs]
    existing = sum(state != "new" for state in states)
    lines = [f"{', '.join(plan.studies)} in profile {plan.profile}, seeds {','.join(map(str, plan.seeds))}: "
             f"{plan.cells} table cells need {plan.distinct_runs} distinct runs, {len(plan.shared_runs)} shared "
             f"between tables; {existing} already in {store.root}/ ({states.count(RunState.FINISHED)} finished)"]
    lines += [f"{run.run_id}  {run.spec.config:<28} seed {run.spec.seed:<3} {state:<11} {', '.join(run.uses)}"
              for run, state in zip(plan.runs, states, strict=True)]
    return "\n".join(lines)


def format_status(store: RunStore, run_ids: Iterable[str] | None = None) -> str:
    """One line per run in the store (or of ``run_ids``): state, the rows that use it, and its metrics or error."""
    runs = store.runs() if run_ids is None else [store.run(run_id) for run_id in run_ids]
    if not runs:
        return f"no runs in {store.root}/"
    return "\n".join(status_line(run) for run in runs)


def format_outcome(store: RunStore, states: dict[str, RunState]) -> str:
    """What a study run ended with: counts per state, then a status line for each run that did not finish."""
    counts = {state: list(states.values()).count(state) for state in sorted(set(states.values()))}
    summary = f"{len(states)} runs in {store.root}/: " + ", ".join(f"{n} {state}" for state, n in counts.items())
    unfinished = [run_id for run_id, state in states.items() if state != RunState.FINISHED]
    return "\n".join([summary, format_status(store, unfinished)] if unfinished else [summary])


def _stored_state(run: RunDir) -> str:
    return run.state() if (run.path / "spec.json").is_file() else "new"


def status_line(run: RunDir) -> str:
    """One run: id, state, profile, config, seed, the rows that use it, then its summary metrics or its error."""
    status, spec = run.status(), run.spec()
    line = f"{run.run_id}  {run.state():<11} {spec.profile:<6} {spec.config:<28} seed {spec.seed:<3} " \
           f"{', '.join(status.uses) or '-'}"
    metrics = run.metrics()
    if metrics is not None:
        values = table_metrics(metrics)
        line += "  " + " ".join(f"{name}={values[name]:.1f}" for name in SUMMARY_METRICS if name in values)
    elif status.error:
        line += f"  error: {status.error.splitlines()[-1]}"
    return line
