"""Runs: specs named by their content hash, plans that share runs between tables, and the fault-proof run store."""
from .plan import Plan, PlanError, PlannedRun, plan
from .spec import RunSpec, SpecError
from .store import Attempt, RunDir, RunState, RunStatus, RunStore, StoreError, default_store

__all__ = ["Attempt", "Plan", "PlanError", "PlannedRun", "RunDir", "RunSpec", "RunState", "RunStatus", "RunStore",
           "SpecError", "StoreError", "default_store", "plan"]
