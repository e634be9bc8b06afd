"""Executors over submitit (local processes or SLURM job arrays) and SLURM site profiles."""
from .executors import EXECUTORS, make_backend, run_plan
from .sites import Site, SiteError, load_site

__all__ = ["EXECUTORS", "Site", "SiteError", "load_site", "make_backend", "run_plan"]
