"""The packages of the distribution: tsd_study's, plus the repository's notebooks and SLURM site profiles mapped into
it as ``tsd_study.notebooks`` and ``tsd_study.sites``, so that a wheel holds them (``tsd_study/resources.py`` finds
them there or in a checkout). Everything else is in pyproject.toml."""
from setuptools import find_namespace_packages, setup

BUNDLED = {"tsd_study.notebooks": "notebooks", "tsd_study.sites": "cluster/sites"}

setup(packages=[*find_namespace_packages(include=["tsd_study*"]), *BUNDLED], package_dir=BUNDLED)
