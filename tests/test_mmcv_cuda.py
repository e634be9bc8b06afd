"""Tests for tsd_study.mmcv_cuda, the CUDA build of mmcv's ops and its check: the architecture list and where it
comes from, the header path, the wheel cache, the fat binary reader; the installed (CPU) mmcv is reported as
having no CUDA ops. The CUDA compile itself is not run here (about an hour on 2 cores: docs/gpu.md)."""
from __future__ import annotations

import stat
import struct
import sys
from pathlib import Path

import pytest
import torch

from tsd_study.launch.sites import SiteError, load_site
from tsd_study.mmcv_cuda import (
    ARCH_VARIABLE,
    FATBIN_MAGIC,
    NOT_COMPILED,
    BuildError,
    CudaOps,
    build_environment,
    default_arch_list,
    elf_section,
    fatbin_archs,
    find_cuda_home,
    include_path,
    inspect_mmcv,
    main,
    resolve_arch_list,
    wheel_cache_dir,
)

ROOT = Path(__file__).resolve().parents[1]
# torch 2.13.0+cu130's kernels (torch.cuda.get_arch_list() of the CUDA wheel, measured: docs/gpu.md)
TORCH_ARCHS = ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]


def test_the_default_is_every_torch_architecture_with_ptx_for_the_newest() -> None:
    assert default_arch_list(TORCH_ARCHS) == "7.5;8.0;8.6;9.0;10.0;12.0+PTX"


@pytest.mark.parametrize(("environ", "site", "expected"), [
    ({ARCH_VARIABLE: "9.0"}, "8.0", ("9.0", f"${ARCH_VARIABLE}")),
    ({ARCH_VARIABLE: ""}, "8.0;9.0", ("8.0;9.0", "the site profile's cuda_arch_list")),
    ({}, None, ("7.5;8.0;8.6;9.0;10.0;12.0+PTX", "the default: every architecture torch has kernels for")),
])
def test_the_variable_wins_over_the_site_profile_over_the_default(environ: dict[str, str], site: str | None,
                                                                   expected: tuple[str, str]) -> None:
    assert resolve_arch_list(environ, site, TORCH_ARCHS) == expected


def test_an_architecture_torch_does_not_run_on_is_refused_before_compiling() -> None:
    with pytest.raises(BuildError, match=r"7\.0 is older than 7\.5.*docs/gpu\.md"):
        resolve_arch_list({ARCH_VARIABLE: "7.0;8.0"}, None, TORCH_ARCHS)


@pytest.mark.parametrize("arch_list", ["Ampere", "8", "9.0+ptx", "sm_90"])
def test_a_malformed_architecture_list_is_named(arch_list: str) -> None:
    with pytest.raises(BuildError, match="is not an architecture such as"):
        resolve_arch_list({ARCH_VARIABLE: arch_list}, None, TORCH_ARCHS)


def test_spaces_and_arch_specific_variants_are_accepted() -> None:
    assert resolve_arch_list({ARCH_VARIABLE: "8.0 9.0a 12.0+PTX"}, None, TORCH_ARCHS)[0] == "8.0 9.0a 12.0+PTX"


def test_cuda_home_comes_from_the_variable_else_from_nvcc_on_the_path(tmp_path: Path) -> None:
    assert find_cuda_home({"CUDA_HOME": "/opt/cuda", "PATH": ""}) == Path("/opt/cuda")
    nvcc = tmp_path / "toolkit" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    assert find_cuda_home({"PATH": str(nvcc.parent)}) == tmp_path / "toolkit"
    with pytest.raises(BuildError, match="no nvcc on PATH"):
        find_cuda_home({"PATH": str(tmp_path)})


def test_include_path_adds_the_conda_and_cccl_header_folders_that_exist(tmp_path: Path) -> None:
    conda, cuda_home = tmp_path / "conda", tmp_path / "cuda"
    for folder in (conda / "targets/x86_64-linux/include", conda / "targets/x86_64-linux/include/cccl",
                   cuda_home / "include/cccl"):
        folder.mkdir(parents=True)
    path = include_path({"CONDA_PREFIX": str(conda), "CPATH": "/mine"}, cuda_home).split(":")
    assert path == [str(conda / "targets/x86_64-linux/include"), str(conda / "targets/x86_64-linux/include/cccl"),
                    str(cuda_home / "include/cccl"), "/mine"]
    assert include_path({}, tmp_path / "nothing") == ""


def test_the_build_environment_forces_cuda_with_the_chosen_architectures(tmp_path: Path) -> None:
    env = build_environment({"PATH": "/bin", "CPATH": "/mine"}, "9.0", tmp_path, jobs=2)
    assert (env["FORCE_CUDA"], env["MMCV_WITH_OPS"], env[ARCH_VARIABLE], env["MAX_JOBS"]) == ("1", "1", "9.0", "2")
    assert (env["CUDA_HOME"], env["CPATH"], env["PATH"]) == (str(tmp_path), "/mine", "/bin")
    assert "-g0" in env["CFLAGS"]


def test_each_architecture_list_has_its_own_wheel_folder(tmp_path: Path) -> None:
    one = wheel_cache_dir(tmp_path, "2.1.0", "2.13.0+cu130", "9.0")
    default = wheel_cache_dir(tmp_path, "2.1.0", "2.13.0+cu130", "7.5;8.0;8.6;9.0;10.0;12.0+PTX")
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert one.name == f"mmcv-2.1.0-torch2.13.0+cu130-{python}-sm9.0"
    assert default.name == f"mmcv-2.1.0-torch2.13.0+cu130-{python}-sm7.5_8.0_8.6_9.0_10.0_12.0_PTX"


def fat_binary(entries: list[tuple[int, int]]) -> bytes:
    """A fat binary of (kind, SM) entries with 8-byte payloads, the layout nvcc writes."""
    body = b""
    for kind, sm in entries:
        header = struct.pack("<HHIQII", kind, 0, 64, 8, 0, 0) + struct.pack("<HHI", 0, 0, sm)
        body += header.ljust(64, b"\0") + b"payload!"
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


def test_the_fat_binary_reader_finds_kernels_and_ptx_across_padded_fat_binaries() -> None:
    section = fat_binary([(2, 90), (2, 75)]) + b"\0" * 8 + fat_binary([(1, 120), (2, 90)])
    assert fatbin_archs(section) == (["7.5", "9.0"], ["12.0"])
    assert fatbin_archs(b"") == ([], [])


@pytest.mark.parametrize(("sass", "ptx", "runs_on", "does_not_run_on"), [
    (["9.0"], [], [(9, 0)], [(8, 0), (10, 0)]),
    (["8.0"], [], [(8, 6), (8, 9)], [(9, 0)]),
    (["7.5", "12.0"], ["12.0"], [(7, 5), (12, 0), (12, 1), (13, 0)], [(8, 0), (7, 0)]),
])
def test_kernels_run_on_their_major_version_and_ptx_on_newer_gpus(sass: list[str], ptx: list[str],
                                                                  runs_on: list[tuple[int, int]],
                                                                  does_not_run_on: list[tuple[int, int]]) -> None:
    ops = CudaOps(mmcv="2.1.0", extension="_ext.so", cuda="13.0", compiler="GCC 12.2", sass=sass, ptx=ptx)
    assert all(ops.runs_on(capability) for capability in runs_on)
    assert not any(ops.runs_on(capability) for capability in does_not_run_on)


@pytest.mark.skipif(torch.version.cuda is not None, reason="the installed torch is a CUDA build")
def test_the_cpu_mmcv_reports_no_cuda_ops(capsys: pytest.CaptureFixture[str]) -> None:
    ops = inspect_mmcv()
    assert (ops.cuda, ops.sass, ops.ptx, ops.compiled) == (NOT_COMPILED, [], [], False)
    assert elf_section(Path(ops.extension), ".text")
    assert main(["check"]) == 1
    assert "CUDA not available" in capsys.readouterr().out


@pytest.mark.skipif(torch.version.cuda is not None, reason="the installed torch is a CUDA build")
def test_the_build_refuses_a_cpu_torch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--mmcv", "2.1.0"]) == 2
    assert "is a CPU build" in capsys.readouterr().err


def test_a_missing_site_profile_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--mmcv", "2.1.0", "--site", str(tmp_path / "mine.yaml")]) == 2
    assert "mine.yaml: no such site profile" in capsys.readouterr().err


def test_a_site_profile_may_name_the_architectures(tmp_path: Path) -> None:
    example = (ROOT / "cluster" / "sites" / "gpu-cluster.example.yaml").read_text()
    site = tmp_path / "site.yaml"
    site.write_text(example + 'cuda_arch_list: "8.0;9.0"\n')
    assert load_site(site).cuda_arch_list == "8.0;9.0"
    site.write_text(example + "cuda_arch_list: 8.0\n")
    with pytest.raises(SiteError, match="cuda_arch_list: expected str"):
        load_site(site)
    assert load_site(ROOT / "cluster" / "sites" / "gpu-cluster.example.yaml").cuda_arch_list is None
