"""Resolve ``mmdet::`` config bases without mmengine's fixed cost per reference.

For every ``package::path`` base, mmengine 0.10 first checks that the package is installed by reloading
``pkg_resources``, then looks the path up in the package's model index by parsing all of its metafiles (about a
hundred YAML files for mmdetection), and only then, not finding a base such as ``mmdet::_base_/default_runtime.py``
there, falls back to the file under ``.mim/configs``. Our configs have two or three such bases each:
``tsd-study study plan`` of every study in the cpu profile (20 runs) took 10.5 to 11.4 s, 3.4 to 3.8 s with this
module. It keeps each parsed metafile and each positive installation check for the life of the process (installed
packages' files do not change under a running planner); what mmengine resolves is unchanged. ``remember_lookups``
installs it into mmengine (``config_loading.read_config`` does, before every config it reads).
"""
from __future__ import annotations

import functools

from mmengine.config import config as config_module
from mmengine.config import utils as config_utils

_check_installed = config_module.is_installed
_installed: set[str] = set()


def is_installed(package: str) -> bool:
    """mmengine's installation check, remembered once it has said yes."""
    if package not in _installed and _check_installed(package):
        _installed.add(package)
    return package in _installed


def remember_lookups() -> None:
    """Make mmengine's config loading remember metafiles and installation checks (once; later calls do nothing)."""
    if config_module.is_installed is not is_installed:
        config_utils.load = functools.cache(config_utils.load)  # only the model-index lookup reads files through it
        config_module.is_installed = is_installed
