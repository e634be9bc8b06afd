"""SLURM site profiles and executor resources: checked before anything is submitted. Runtime about 1 s."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tsd_study.launch import SiteError, load_site, make_backend, run_plan
from tsd_study.launch.executors import SlurmBackend
from tsd_study.launch.sites import SITES_DIR, check_reachable
from tsd_study.runs import Plan, PlannedRun, RunSpec, RunStore

NO_CONTROLLER = """ClusterName=nowhere
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=1
MessageTimeout=1
NodeName=localhost CPUs=1
PartitionName=gpu Nodes=localhost
"""  # a controller that does not answer, and sinfo that does not wait for it
SPEC = RunSpec(config="full/tsd_pc", overrides={}, profile="full", dataset="coco2017", seed=0, max_iters=None)


def site_file(tmp_path: Path, drop: tuple[str, ...] = (), **changes: Any) -> Path:
    """cluster/sites/gpu-cluster.example.yaml with the keys ``drop`` removed and some keys changed."""
    data = yaml.safe_load((SITES_DIR / "gpu-cluster.example.yaml").read_text())
    data.update(changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in data.items() if key not in drop}))
    return path


def planned(gpus: int, cpu_tasks: int = 1) -> PlannedRun:
    return PlannedRun(spec=SPEC, uses=("table3/tsd_pc",), gpus=gpus, cpu_tasks=cpu_tasks)


def test_the_shipped_profiles_load() -> None:
    local = load_site("local")
    assert (local.name, local.partition, local.gpus_per_node, local.time_min) == ("local", "local", 0, 30)
    assert local.environment() == {"SLURM_CONF": "/var/tmp/tsd-study-slurm/etc/slurm.conf"}
    example = load_site(SITES_DIR / "gpu-cluster.example.yaml")
    assert (example.nodes_max, example.gpus_per_node, example.environment()) == (2, 8, {})


def test_unknown_site_lists_the_known_ones() -> None:
    with pytest.raises(SiteError, match=r"unknown site 'mars': no .*cluster/sites/mars.yaml; known: .*local"):
        load_site("mars")


def test_missing_unknown_and_bad_keys_are_named_with_the_file(tmp_path: Path) -> None:
    path = site_file(tmp_path, drop=("partition", "mem_gb"), gpus=8, time_min=1, setup="conda activate x")
    with pytest.raises(SiteError) as error:
        load_site(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    for problem in ("missing key 'partition'", "missing key 'mem_gb'", "unknown key 'gpus'",
                    "time_min: must be at least 2, got 1", "setup: expected list, got 'conda activate x'"):
        assert problem in message


def test_a_missing_slurm_conf_is_named(tmp_path: Path) -> None:
    site = load_site(site_file(tmp_path, slurm_conf=str(tmp_path / "slurm.conf")))
    with pytest.raises(SiteError, match=f"site.yaml: slurm_conf: {tmp_path}/slurm.conf does not exist"):
        check_reachable(site)


def test_slurm_not_reachable_is_an_error_before_any_submission(tmp_path: Path) -> None:
    (tmp_path / "slurm.conf").write_text(NO_CONTROLLER)
    site = load_site(site_file(tmp_path, gpus_per_node=0, slurm_conf=str(tmp_path / "slurm.conf")))
    with pytest.raises(SiteError, match="SLURM is not reachable for site 'gpu-cluster'"):
        check_reachable(site)
    store = RunStore(tmp_path / "runs")
    backend = make_backend("slurm", store, site=site)
    plan = Plan(profile="cpu", studies=("table3",), seeds=(0,), runs=(planned(gpus=0),))
    with pytest.raises(SiteError, match="SLURM is not reachable"):
        run_plan(plan, store, backend, progress=False)
    assert store.runs() == []


def test_gpu_runs_take_whole_nodes_one_task_per_gpu(tmp_path: Path) -> None:
    backend = SlurmBackend(folder=tmp_path, site=load_site(SITES_DIR / "gpu-cluster.example.yaml"), max_concurrent=2)
    assert backend.resources(planned(gpus=16)) == dict(nodes=2, ntasks_per_node=8, gpus_per_node=8)
    assert backend.resources(planned(gpus=4)) == dict(nodes=1, ntasks_per_node=4, gpus_per_node=4)
    assert backend.resources(planned(gpus=0, cpu_tasks=2)) == dict(nodes=1, ntasks_per_node=2)
    with pytest.raises(SiteError, match=r"a run wants 24 GPUs = 3 nodes of 8, more than nodes_max: 2"):
        backend.check([planned(gpus=24)])


def test_a_site_without_gpus_refuses_gpu_runs(tmp_path: Path) -> None:
    backend = SlurmBackend(folder=tmp_path, site=load_site("local"), max_concurrent=2)
    with pytest.raises(SiteError, match=r"local.yaml: site 'local' has no GPUs \(gpus_per_node: 0\), a run wants 16"):
        backend.check([planned(gpus=16)])


def test_short_time_limits_get_an_earlier_checkpoint_signal(tmp_path: Path) -> None:
    short = SlurmBackend(folder=tmp_path, site=load_site(site_file(tmp_path, time_min=2)), max_concurrent=1)
    long = SlurmBackend(folder=tmp_path, site=load_site(SITES_DIR / "gpu-cluster.example.yaml"), max_concurrent=1)
    assert (short.signal_delay_s, long.signal_delay_s) == (30, 90)


def test_sbatch_script_keeps_cpus_per_srun_task_and_requeues_many_time_limits(tmp_path: Path) -> None:
    example = SlurmBackend(folder=tmp_path, site=load_site(SITES_DIR / "gpu-cluster.example.yaml"), max_concurrent=2)
    executor = example._executor(example.resources(planned(gpus=16)))
    script = executor._make_submission_file_text("python -m job", "uid")
    assert "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK" in script.splitlines()
    assert (executor.max_num_timeout, example.poll_s) == (100, 30.0)
    quick = SlurmBackend(folder=tmp_path, site=load_site(site_file(tmp_path, max_requeues=5, poll_s=2)), max_concurrent=1)
    assert (quick._executor({}).max_num_timeout, quick.poll_s) == (5, 2)
    with pytest.raises(SiteError, match="max_requeues: must be at least 0, got -1; poll_s: expected int or float"):
        load_site(site_file(tmp_path, max_requeues=-1, poll_s="often"))


def test_executor_choices_are_checked(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="unknown executor 'kubernetes'; known: local, slurm"):
        make_backend("kubernetes", store)
    with pytest.raises(ValueError, match="the slurm executor needs a site profile"):
        make_backend("slurm", store)
    with pytest.raises(ValueError, match="a site profile is for the slurm executor"):
        make_backend("local", store, site="local")
    with pytest.raises(ValueError, match="max_concurrent: must be at least 1, got 0"):
        make_backend("local", store, max_concurrent=0)
