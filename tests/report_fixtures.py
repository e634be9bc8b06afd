"""Study results built in memory, shared by the report tests."""
from __future__ import annotations

from pathlib import Path

from tsd_study.report import RunResult, StudyResults
from tsd_study.studies import load_study


def fabricated(study: str, profile: str = "cpu", seeds: int = 2, run_dir: Path = Path("/nonexistent"),
               value=lambda row, metric, seed: 10.0 + seed, curve: list[dict] | None = None) -> StudyResults:
    """Finished runs of every trained row, each metric's value given by ``value(row, metric, seed)``, each with the
    learning curve ``curve`` when given."""
    definition = load_study(study)
    metrics = definition.metrics + ("AP_all_50", "AP_all_60", "AP_all_70", "AP_all_80", "AP_all_90")
    runs = tuple(RunResult(row.id, seed, f"{row.id}-{seed}", "finished", run_dir,
                           {metric: value(row.id, metric, seed) for metric in metrics}, curve=tuple(curve or ()))
                 for row in definition.rows_for(profile) if row.runs_in(profile) for seed in range(seeds))
    return StudyResults(definition, profile, tuple(range(seeds)), runs)
