"""A wheel built from the repository, installed into a fresh virtual environment without the checkout, works.

The environment gets the dependencies of the one running the tests through a ``.pth`` line: an added directory's own
``.pth`` files are not run, so the editable finder of ``make setup`` that lives there does not reach the checkout.
The wheel is built from a copy of the build's inputs, so that the checkout gets no ``build/`` or ``*.egg-info``.
Runtime about 30 s on 2 busy cores (build and install 5 s, then the commands).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "tsd_study", "notebooks", "cluster/sites")
PACKAGED = {"tsd_study": "tsd_study", "notebooks": "tsd_study/notebooks", "cluster/sites": "tsd_study/sites"}
"""Each repository folder whose every file the wheel holds, and where in the wheel."""
PLUGIN_CONFIG = """\
_base_ = ['mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['tsd_study.models'], allow_failed_imports=False)
model = dict(roi_head=dict(type='TSDRoIHead', bbox_head=dict(type='TSDBBoxHead'),
                           tsd=dict(margin_cls=0.2, margin_loc=0.2)))
"""
PLUGIN_CHECK = """\
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

config = Config.fromfile('plugin.py')  # imports custom_imports
assert MODELS.get('TSDRoIHead') is not None
register_all_modules()
print(type(MODELS.build(config.model).roi_head).__module__)
"""
RESOURCES_CHECK = """\
import json
import tsd_study
from tsd_study.launch.sites import SITES_DIR, load_site
from tsd_study.report.reproduce import NOTEBOOKS
from tsd_study.runs.manifest import git_commit

print(json.dumps(dict(package=tsd_study.__file__, notebooks_dir=str(NOTEBOOKS), sites_dir=str(SITES_DIR),
                      notebooks=sorted(path.stem for path in NOTEBOOKS.glob('*.ipynb')),
                      site=load_site('local').source, git_commit=git_commit())))
"""


class Install(NamedTuple):
    """The built wheel and the fresh environment it is installed in."""

    wheel: Path
    python: Path
    site_packages: Path
    workdir: Path

    def run(self, *command: str | Path) -> str:
        """Run in the fresh environment, from a directory outside the checkout, with no PYTHONPATH."""
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        done = subprocess.run([str(part) for part in command], cwd=self.workdir, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """The wheel, built and installed with pip (no dependencies, no index) into a fresh virtual environment."""
    root = tmp_path_factory.mktemp("wheel")
    source, wheels, environment, workdir = (root / name for name in ("source", "wheels", "venv", "work"))
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source],
                   check=True, timeout=300)
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site_packages = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    dependencies = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (site_packages / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    (wheel,) = wheels.glob("tsd_study-*.whl")
    subprocess.run([*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel],
                   check=True, timeout=300)
    workdir.mkdir()
    return Install(wheel, python, site_packages, workdir)


def test_wheel_holds_every_package_file(installed: Install) -> None:
    """Every file of the package (code, configs, study definitions, templates), the notebooks and the site profiles."""
    expected = {f"{target}/{file.relative_to(ROOT / folder).as_posix()}"
                for folder, target in PACKAGED.items() for file in (ROOT / folder).rglob("*")
                if file.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                              for part in file.relative_to(ROOT).parts)}
    with zipfile.ZipFile(installed.wheel) as wheel:
        missing = expected - set(wheel.namelist())
    assert not missing, f"not in the wheel: {sorted(missing)}"


def test_installed_package_finds_its_files(installed: Install) -> None:
    """tsd_study comes from the environment, with its own notebooks and site profiles, and claims no git commit."""
    found = json.loads(installed.run(installed.python, "-c", RESOURCES_CHECK))
    package = installed.site_packages / "tsd_study"
    assert Path(found["package"]).parent == package
    assert (found["notebooks_dir"], found["sites_dir"]) == (str(package / "notebooks"), str(package / "sites"))
    assert found["notebooks"] == sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert found["site"] == str(package / "sites" / "local.yaml")
    assert found["git_commit"] is None


def test_console_script(installed: Install) -> None:
    """``tsd-study study plan all`` reads every study definition and config (in the smoke profile, whose dataset is
    generated in a second, where the cpu profile's takes 20 s); ``tsd-study params table1`` builds the models."""
    script = installed.python.parent / "tsd-study"
    header = installed.run(script, "study", "plan", "all", "--profile", "smoke").splitlines()[0]
    planned, _, _ = header.partition(" in profile smoke")
    studies = (ROOT / "tsd_study" / "studies" / "definitions").glob("*.yaml")
    assert sorted(planned.split(", ")) == sorted(path.stem for path in studies)
    table = installed.run(script, "params", "table1").splitlines()
    assert table[0] == "row,config,params_M,paper_params_M,gap_percent" and len(table) > 1


def test_plugin_through_custom_imports(installed: Install) -> None:
    """The README's plugin config: an mmdetection config loads the TSD head through ``custom_imports``."""
    (installed.workdir / "plugin.py").write_text(PLUGIN_CONFIG)
    module = installed.run(installed.python, "-c", PLUGIN_CHECK).strip().splitlines()[-1]
    assert module == "tsd_study.models.tsd_roi_head"
