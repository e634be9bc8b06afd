"""Config loading: find a config (a file, or a packaged name such as ``cpu/tsd_pc``), merge overrides, attach and
check its dataset, validate its TSD switches; everything that can be wrong with the input fails here."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from mmengine.config import Config

from tsd_study.data import apply_dataset, checked_dataset
from tsd_study.external_configs import remember_lookups
from tsd_study.switches import TSDSwitches
from tsd_study.weights import use_weights_cache, weights_dir

CONFIG_ROOT = Path(__file__).parent / "configs"
CONFIG_PROFILES = ("cpu", "full")  # the folders of packaged configs; study profiles are in studies/profiles.py
RECIPE_DIGEST_KEY = "tsd_recipe_digest"
"""Config key ``load_config`` sets: the digest of the recipe (``recipe_digest``), recorded in each run's manifest."""
RECIPE_DIGEST_LENGTH = 16


class ConfigError(ValueError):
    """A config cannot be found or is inconsistent; the message names the file or key."""


def config_path(config: str | Path) -> Path:
    """A config file from a path, or from a name inside the package such as ``cpu/tsd_pc``."""
    path = Path(config)
    if path.is_file():
        return path.resolve()
    packaged = CONFIG_ROOT / (path if path.suffix == ".py" else path.with_suffix(".py"))
    if packaged.is_file():
        return packaged
    raise ConfigError(f"{config}: no such config file, and no packaged config of that name under {CONFIG_ROOT} "
                      f"(e.g. cpu/faster_rcnn, full/tsd_pc)")


def read_config(config: str | Path, import_modules: bool = True) -> Config:
    """A config file as mmengine parses it, ``mmdet::`` bases included (``import_modules=False``: without importing
    its ``custom_imports``)."""
    remember_lookups()
    return Config.fromfile(config_path(config), import_custom_modules=import_modules)


def load_config(config: str | Path, *, dataset: str | None = None, cfg_options: dict[str, Any] | None = None,
                work_dir: str | Path | None = None, max_iters: int | None = None,
                import_modules: bool = True) -> Config:
    """Build a ready-to-run config: overrides merged, checkpoints pointed at the weights cache when there is one
    (``tsd_study.weights``), dataset resolved and checked, switches validated.

    Everything that can be wrong with the input fails here, before a Runner exists; each annotation file is checked
    once per version of it (``tsd_study.data.check_records``). ``import_modules=False`` skips the config's
    ``custom_imports`` (torch, mmdetection, the plugin): for checking configs without building them.
    """
    cfg = read_config(config, import_modules)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if max_iters is not None:
        set_max_iters(cfg, max_iters)
    cfg[RECIPE_DIGEST_KEY] = recipe_digest(cfg)
    weights = weights_dir()
    if weights is not None:
        use_weights_cache(cfg, weights, str(config))
    dataset_ref = dataset or cfg.get("tsd_dataset")
    if not dataset_ref:
        raise ConfigError(f"{config}: no dataset: set `tsd_dataset` in the config or pass one")
    spec, _ = checked_dataset(dataset_ref)
    apply_dataset(cfg, spec)
    cfg.tsd_dataset = dataset_ref
    roi_head = cfg.model.get("roi_head", {})
    if roi_head.get("type") == "TSDRoIHead":
        TSDSwitches.from_config(roi_head.get("tsd"))
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / config_path(config).stem)
    return cfg


def recipe_digest(cfg: Config) -> str:
    """sha256 (first 16 hex digits) of what a config trains and evaluates, as files and overrides give it: the seed
    left out (a run spec has its own) and taken before anything of this machine (dataset paths, the weights cache,
    the work dir) is filled in, so that the planner and every job of a run compute the same digest anywhere."""
    recipe = cfg.to_dict()
    recipe.pop(RECIPE_DIGEST_KEY, None)
    # without the seed, and without the key altogether where only a seed set it (the full configs have none)
    randomness = {key: value for key, value in (recipe.pop("randomness", None) or {}).items() if key != "seed"}
    if randomness:
        recipe["randomness"] = randomness
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=_named)
    return hashlib.sha256(canonical.encode()).hexdigest()[:RECIPE_DIGEST_LENGTH]


def _named(value: Any) -> str:
    """A class or function in a config (mmengine's pure-python configs) by its qualified name; ConfigError for
    anything else JSON cannot hold, whose text could differ from one process to the next."""
    qualname = getattr(value, "__qualname__", None)
    if qualname is None:
        raise ConfigError(f"a config value of type {type(value).__name__} ({value!r}) has no stable text for the "
                          f"recipe digest: use plain values, or a class or function")
    return f"{value.__module__}.{qualname}"


def set_max_iters(cfg: Config, max_iters: int) -> None:
    """Shorten or lengthen an iteration-based schedule; LR steps, the validation (learning-curve) interval and the
    checkpoint interval scale with it."""
    loop = cfg.train_cfg
    if loop.get("type") != "IterBasedTrainLoop":
        raise ConfigError(f"train_cfg.type: max_iters needs an IterBasedTrainLoop, this config has {loop.get('type')}")
    scale = max_iters / loop.max_iters
    loop.val_interval = min(max(1, round(loop.get("val_interval", loop.max_iters) * scale)), max_iters)
    loop.max_iters = max_iters
    schedulers = []
    for scheduler in cfg.param_scheduler:
        scheduler = copy.deepcopy(scheduler)
        scheduler.end = min(max(1, round(scheduler.end * scale)), max_iters)
        if "milestones" in scheduler:
            scheduler.milestones = [round(step * scale) for step in scheduler.milestones]
        schedulers.append(scheduler)
    cfg.param_scheduler = schedulers
    checkpoint = cfg.default_hooks.checkpoint
    checkpoint.interval = min(max(1, round(checkpoint.interval * scale)), max_iters)
