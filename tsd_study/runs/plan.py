"""Studies -> the distinct runs they need: one run per (config, overrides, profile, dataset, seed), shared by rows.

Planning validates everything a run needs before anything is submitted: each distinct (config, overrides) is loaded
once with ``config_loading.load_config`` (config file, dataset, overrides, TSD switches), and every problem found is reported
in one error naming the study, row and what is wrong.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tsd_study.studies import Study, StudyError, load_study
from tsd_study.studies.profiles import Profile, get_profile

from .spec import RunSpec, SpecError, canonical_overrides

DEFAULT_SEEDS = (0, 1, 2)
"""Three seeds: verdicts come from seed-paired intervals, which one seed cannot give."""
GPUS_KEY = "tsd_gpus"
"""Config key: GPUs the recipe wants (16 at full scale); 0 trains on CPU."""
CPU_TASKS_KEY = "tsd_cpu_tasks"
"""Config key: training processes of a CPU run (default 1), e.g. 2 to train with the gloo backend on two cores."""


class PlanError(ValueError):
    """Studies that cannot be planned; the message lists every problem with its study, row and key."""


@dataclass(frozen=True)
class PlannedRun:
    """A distinct run, the study rows that use it (``study/row``), the resources its config asks for, its model
    in words (``model_description.describe_model``) and the digest of its config's recipe as the config files give
    it now (``config_loading.recipe_digest``; a run that recorded another one is stale)."""

    spec: RunSpec
    uses: tuple[str, ...]
    gpus: int
    cpu_tasks: int
    model: str = ""
    recipe_digest: str = ""

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def studies(self) -> frozenset[str]:
        return frozenset(use.split("/", 1)[0] for use in self.uses)


@dataclass(frozen=True)
class Plan:
    """The runs some studies need in one profile, each distinct run once, in the order rows first need them (the
    order they are submitted in, unless reordered by ``longest_first``)."""

    profile: str
    studies: tuple[str, ...]
    seeds: tuple[int, ...]
    runs: tuple[PlannedRun, ...]

    @property
    def distinct_runs(self) -> int:
        return len(self.runs)

    @property
    def cells(self) -> int:
        """Table cells (study row x seed) the runs fill; more than ``distinct_runs`` when rows share runs."""
        return sum(len(run.uses) for run in self.runs)

    @property
    def shared_runs(self) -> tuple[PlannedRun, ...]:
        """Runs that rows of more than one study use (trained once, shown in several tables)."""
        return tuple(run for run in self.runs if len(run.studies) > 1)

    def longest_first(self, expected_s: Mapping[str, float]) -> Plan:
        """The same runs, those expected to take longest first, so that the runs started last are short ones and no
        slot waits idle for long at the end. Runs with no expectation (new ones) lead, in plan order."""
        runs = sorted(self.runs, key=lambda run: -expected_s.get(run.run_id, math.inf))
        return dataclasses.replace(self, runs=tuple(runs))


@dataclass(frozen=True)
class _Cell:
    """A (config, overrides) pair and the study rows that train it."""

    config: str
    overrides: dict[str, Any]
    uses: tuple[str, ...]


def plan(studies: Sequence[str | Study], profile: str | Profile, seeds: Sequence[int] = DEFAULT_SEEDS) -> Plan:
    """The distinct runs ``studies`` need in ``profile`` for every seed; rows not trained in the profile are skipped.

    Raises PlanError listing every unknown study, missing config, missing dataset or bad override/switch.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if not seeds or len(set(seeds)) != len(seeds):
        raise PlanError(f"seeds: expected distinct integers, got {list(seeds)}")
    loaded, problems = _load_studies(studies)
    cells = _cells(loaded, profile, problems)
    resolved = _resolve_configs(cells, profile, problems)
    if problems:
        raise PlanError(f"cannot plan {', '.join(_names(studies))} in profile {profile.name!r}:\n  "
                        + "\n  ".join(problems))
    runs = [
        PlannedRun(spec=RunSpec(config=cell.config, overrides=cell.overrides, profile=profile.name, dataset=dataset,
                                seed=seed, max_iters=profile.max_iters),
                   uses=cell.uses, gpus=gpus, cpu_tasks=cpu_tasks, model=model, recipe_digest=digest)
        for seed in seeds for cell, (dataset, gpus, cpu_tasks, model, digest) in zip(cells, resolved, strict=True)
    ]
    return Plan(profile=profile.name, studies=tuple(study.name for study in loaded), seeds=tuple(seeds),
                runs=tuple(runs))


def study_configs(studies: Sequence[str | Study], profile: str | Profile) -> list[tuple[str, dict[str, Any]]]:
    """The distinct (config, overrides) the studies' rows train in ``profile``, without loading the configs.

    Raises PlanError listing every unknown study and bad override.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    loaded, problems = _load_studies(studies)
    cells = _cells(loaded, profile, problems)
    if problems:
        raise PlanError(f"cannot list the configs of {', '.join(_names(studies))} in profile {profile.name!r}:\n  "
                        + "\n  ".join(problems))
    return [(cell.config, cell.overrides) for cell in cells]


def _names(studies: Sequence[str | Study]) -> list[str]:
    return [study if isinstance(study, str) else study.name for study in studies]


def _load_studies(studies: Sequence[str | Study]) -> tuple[list[Study], list[str]]:
    """The study definitions, and one problem line per name that does not load."""
    loaded, problems = [], []
    for study in studies:
        try:
            loaded.append(load_study(study) if isinstance(study, str) else study)
        except StudyError as error:
            problems.append(str(error))
    return loaded, problems


def _cells(studies: list[Study], profile: Profile, problems: list[str]) -> list[_Cell]:
    """One cell per distinct (config, overrides) the studies' rows train in ``profile``, in first-use order."""
    uses: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for study in studies:
        for row in study.rows_for(profile.name):
            if not row.runs_in(profile.name):
                continue
            try:
                overrides = canonical_overrides(row.overrides)
            except SpecError as error:
                problems.append(f"{study.name}/{row.id}: {error}")
                continue
            config = f"{profile.config_dir}/{row.config}"
            key = (config, json.dumps(overrides))
            first.setdefault(key, (config, overrides))
            uses.setdefault(key, []).append(f"{study.name}/{row.id}")
    return [_Cell(config, overrides, tuple(uses[key])) for key, (config, overrides) in first.items()]


def _resolve_configs(cells: list[_Cell], profile: Profile,
                     problems: list[str]) -> list[tuple[str, int, int, str, str]]:
    """Load each cell's config once; its dataset reference, GPUs, CPU tasks, model description and recipe digest,
    or a problem line naming its rows."""
    from tsd_study.config_loading import RECIPE_DIGEST_KEY, load_config  # mmengine's Config: only when planning
    from tsd_study.model_description import describe_model

    resolved = []
    for cell in cells:
        try:
            cfg = load_config(cell.config, dataset=profile.dataset, cfg_options=cell.overrides,
                                     max_iters=profile.max_iters, import_modules=False)
            resolved.append((str(cfg.tsd_dataset), _count(cfg, GPUS_KEY, default=0, minimum=0),
                             _count(cfg, CPU_TASKS_KEY, default=1, minimum=1), describe_model(cfg),
                             cfg[RECIPE_DIGEST_KEY]))
        except Exception as error:  # every way a config fails to load is a problem to list
            overrides = f" with overrides {cell.overrides}" if cell.overrides else ""
            kind = "" if isinstance(error, ValueError) else f"{type(error).__name__}: "
            problems.append(f"{', '.join(cell.uses)} ({cell.config}{overrides}): {kind}{error}")
            resolved.append(("", 0, 1, "", ""))
    return resolved


def _count(cfg: Any, key: str, default: int, minimum: int) -> int:
    """An integer config key of at least ``minimum``."""
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value
