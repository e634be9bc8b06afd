"""Runs: specs named by their content hash, plans that share runs between tables, and the fault-proof run store."""
from .plan import Plan, PlanError, PlannedRun, plan
from .spec import RunSpec, SpecError
from .stale import StaleRunsError, stale_runs
from .store import Attempt, RunDir, RunState, RunStatus, RunStore, StoreError, default_store

__all__ = ["Attempt", "Plan", "PlanError", "PlannedRun", "RunDir", "RunSpec", "RunState", "RunStatus", "RunStore",
           "SpecError", "StaleRunsError", "StoreError", "default_store", "plan", "stale_runs"]
