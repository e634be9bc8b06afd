"""Folders of the repository that the package reads at run time: the study notebooks and the SLURM site profiles.

In a source checkout (``make setup``'s editable install, or the checkout on ``sys.path``) they are the repository's
``notebooks/`` and ``cluster/sites/``; a wheel carries them inside the package as ``tsd_study/notebooks`` and
``tsd_study/sites`` (setup.py maps them there).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent
"""The repository when the package runs from a checkout; an installed package's ``site-packages``."""


def notebooks_dir() -> Path:
    """The study notebooks (``<name>.ipynb``)."""
    return _bundled("notebooks", Path("notebooks"))


def sites_dir() -> Path:
    """The SLURM site profiles (``<name>.yaml``)."""
    return _bundled("sites", Path("cluster", "sites"))


def checkout() -> Path | None:
    """The git checkout the package runs from; None for an installed package (or a checkout without ``.git``)."""
    return SOURCE_ROOT if (SOURCE_ROOT / ".git").exists() else None


def _bundled(packaged: str, in_repository: Path) -> Path:
    """The folder inside an installed package when there is one, else the repository's."""
    inside = PACKAGE_DIR / packaged
    return inside if inside.is_dir() else SOURCE_ROOT / in_repository
