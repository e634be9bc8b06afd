"""Stale runs: runs whose config has changed since they trained.

A run is named by its spec (config name, overrides, profile, dataset, seed, schedule length), not by what the config
file says, so editing a config keeps its runs' names. Each training records the digest of the recipe it trains
(``config_loading.recipe_digest``); a plan computes the digest its configs give now, and a run that recorded another
one is stale: its metrics answer a question the study no longer asks, its checkpoints belong to another recipe.
"""
from __future__ import annotations

from .plan import Plan, PlannedRun
from .store import RunStore, StoreError

LISTED_RUNS = 4


class StaleRunsError(StoreError):
    """Runs of a plan were trained from another version of their config; the message lists them and what to do."""

    @classmethod
    def listing(cls, stale: list[PlannedRun], store: RunStore) -> StaleRunsError:
        """The one-line error that names the stale runs (the first few) and the ways on."""
        listed = ", ".join(f"{run.run_id} ({run.spec.config} seed {run.spec.seed})" for run in stale[:LISTED_RUNS])
        more = f" and {len(stale) - LISTED_RUNS} more" if len(stale) > LISTED_RUNS else ""
        return cls(f"{store.root}: {len(stale)} run(s) were trained from another version of their config: "
                   f"{listed}{more}; retrain them (tsd-study study run or reproduce with --retrain-stale), or use "
                   f"another store")


def stale_runs(plan: Plan, store: RunStore) -> list[PlannedRun]:
    """The plan's runs in ``store`` holding metrics or a checkpoint from a recipe other than their config's now (runs
    trained before recipes were recorded are taken as they are; one that failed before its first checkpoint holds
    nothing to be stale)."""
    stale = []
    for run in plan.runs:
        run_dir = store.run(run.run_id)
        trained = run_dir.trained_recipe()
        # run.recipe_digest is empty only in a PlannedRun built by hand: plan() gives every run its digest
        if trained is not None and run.recipe_digest and trained != run.recipe_digest and run_dir.has_trained():
            stale.append(run)
    return stale


def check_not_stale(plan: Plan, store: RunStore) -> None:
    """Raises StaleRunsError naming the plan's stale runs in ``store``, if it holds any."""
    stale = stale_runs(plan, store)
    if stale:
        raise StaleRunsError.listing(stale, store)
