"""Fixtures shared by the test suite."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared_data import SHARED_DATA
from slurm_fixtures import local_slurm  # noqa: F401  (the real local SLURM cluster, started once per session)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The workplace's test data (voc100, coco_eval_ref; see shared_data.py), required by the suite."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the project checkout "
                    f"(or beside the checkout it was cloned from, or TSD_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated datasets (shapes refs) go to one temporary data home per test session, shared by its jobs."""
    home = tmp_path_factory.mktemp("data-home")
    previous = os.environ.get("TSD_STUDY_DATA")
    os.environ["TSD_STUDY_DATA"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("TSD_STUDY_DATA", None)
    else:
        os.environ["TSD_STUDY_DATA"] = previous


@pytest.fixture(scope="session")
def smoke_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's smoke-profile directory: its run store ``runs/`` is trained once and shared by the nbval and
    browser tests."""
    directory = tmp_path_factory.getbasetemp() / "smoke"
    (directory / "runs").mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """Run the in-process tiny models on one thread: a second one buys nothing at these sizes, and on a shared
    2-core machine OpenMP's waits for a descheduled thread make the suite several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
