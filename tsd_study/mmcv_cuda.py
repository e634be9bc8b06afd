"""mmcv's CUDA ops: build them against the installed CUDA torch (``make setup-gpu``), and check an installed mmcv.

``python -m tsd_study.mmcv_cuda build --mmcv VERSION [--site NAME]`` compiles mmcv from its source archive with
its CUDA kernels, keeps the wheel in a cache (one per mmcv, torch, Python and architecture list), installs it and
fails unless the installed mmcv reports compiled CUDA ops. ``python -m tsd_study.mmcv_cuda check`` only checks.
Neither needs a GPU, so both run on a login node: compiling needs nvcc and the CUDA headers, and the check reads the
CUDA version mmcv was compiled against from its extension and the architectures of its kernels from the extension's
fat binary. docs/gpu.md has the measured build, the GPUs the pinned torch supports and the choices made here.

No mmcv, torch or tsd_study import happens at module level beyond the standard library: ``make setup-gpu`` runs
this before tsd-study is installed, and ``check`` runs in a fresh process after mmcv was replaced.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

ARCH_VARIABLE = "TORCH_CUDA_ARCH_LIST"
MODULE = "tsd_study.mmcv_cuda"
NOT_COMPILED = "not available"  # what mmcv's get_compiling_cuda_version() returns for a build without CUDA
DEFAULT_CACHE = Path("~/.cache/tsd-study")
# Header folders the extension builder does not search by itself, relative to CONDA_PREFIX or CUDA_HOME: conda's CUDA
# packages keep their headers under targets/<platform>/include, and CUDA 13 keeps CCCL (thrust, cub, libcu++) in an
# include/cccl folder that nvcc's profile finds only in the toolkit's own layout (not in the PyPI wheels').
EXTRA_INCLUDE_DIRS = (Path("targets/x86_64-linux/include"), Path("targets/x86_64-linux/include/cccl"),
                      Path("include/cccl"))
# Build flags as in the CPU build (Makefile): CFLAGS replaces Python's defaults, -g0 keeps the wheel small.
BUILD_VARIABLES = {"MMCV_WITH_OPS": "1", "FORCE_CUDA": "1", "CFLAGS": "-DNDEBUG -O3 -g0 -Wall -fwrapv"}
FATBIN_SECTION = ".nv_fatbin"
FATBIN_MAGIC = 0xBA55ED50
FATBIN_PTX = 1


class BuildError(RuntimeError):
    """The CUDA build cannot run, or its result is not usable; the message says what to do."""


def torch_archs() -> list[str]:
    """The compute capabilities the installed torch has kernels for, oldest first (``["7.5", ..., "12.0"]``).

    torch.cuda.get_arch_list() answers without a GPU in torch 2.13; for a CPU build of torch it is empty.
    """
    import torch

    numbers = sorted({int(match.group(1)) for arch in torch.cuda.get_arch_list()
                      if (match := re.fullmatch(r"sm_(\d+)", arch))})
    return [f"{number // 10}.{number % 10}" for number in numbers]


def default_arch_list(archs: list[str]) -> str:
    """The architectures torch carries kernels for, the newest also as PTX (JIT-compiled by newer GPUs' drivers):
    ``7.5;8.0;8.6;9.0;10.0;12.0+PTX`` for torch 2.13.0+cu130."""
    return ";".join(archs) + "+PTX"


def resolve_arch_list(environ: Mapping[str, str], site_arch_list: str | None,
                      archs: list[str]) -> tuple[str, str]:
    """(TORCH_CUDA_ARCH_LIST for the build, where it came from): the variable when set, else the site profile's
    ``cuda_arch_list``, else :func:`default_arch_list`. torch's extension builder itself would ask the visible GPUs,
    and raise IndexError on a node without one."""
    if environ.get(ARCH_VARIABLE):
        chosen, source = environ[ARCH_VARIABLE], f"${ARCH_VARIABLE}"
    elif site_arch_list:
        chosen, source = site_arch_list, "the site profile's cuda_arch_list"
    else:
        chosen, source = default_arch_list(archs), "the default: every architecture torch has kernels for"
    check_arch_list(chosen, archs)
    return chosen, source


def check_arch_list(arch_list: str, archs: list[str]) -> None:
    """BuildError for an architecture older than torch's oldest (its CUDA cannot compile for it, and torch itself
    would not run there) or for a list that is not ``X.Y[+PTX]`` entries separated by ``;`` or spaces."""
    oldest = _capability(archs[0])
    for entry in re.split(r"[;\s]+", arch_list.strip()):
        match = re.fullmatch(r"(\d+\.\d+)a?(\+PTX)?", entry)
        if not match:
            raise BuildError(f"{ARCH_VARIABLE}={arch_list!r}: {entry!r} is not an architecture such as 8.0 or "
                             f"9.0+PTX (named ones such as 'Ampere' are not accepted here)")
        if _capability(match.group(1)) < oldest:
            raise BuildError(f"{ARCH_VARIABLE}={arch_list!r}: {entry} is older than {archs[0]}, the oldest "
                             f"architecture this torch runs on (its kernels: {', '.join(archs)}); for older GPUs "
                             f"see docs/gpu.md, 'Older GPUs'")


def _capability(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def find_cuda_home(environ: Mapping[str, str]) -> Path:
    """The CUDA toolkit torch's extension builder will use: $CUDA_HOME, $CUDA_PATH, else nvcc's parent folder."""
    home = environ.get("CUDA_HOME") or environ.get("CUDA_PATH")
    if home:
        return Path(home)
    nvcc = shutil.which("nvcc", path=environ.get("PATH"))
    if nvcc is None:
        raise BuildError("no nvcc on PATH and no CUDA_HOME: the CUDA compiler is missing (conda env of "
                         "environment.yml: cuda-nvcc; or NVIDIA's toolkit with its bin/ on PATH)")
    return Path(nvcc).parent.parent  # as torch finds it: a symlink's folder, not its target's


def include_path(environ: Mapping[str, str], cuda_home: Path) -> str:
    """CPATH with the header folders of EXTRA_INCLUDE_DIRS under $CONDA_PREFIX and CUDA_HOME that exist in front."""
    roots = [Path(environ["CONDA_PREFIX"])] if environ.get("CONDA_PREFIX") else []
    roots.append(cuda_home)
    current = [entry for entry in environ.get("CPATH", "").split(os.pathsep) if entry]
    extra = [str(root / sub) for root in roots for sub in EXTRA_INCLUDE_DIRS if (root / sub).is_dir()]
    return os.pathsep.join(dict.fromkeys(extra + current))


def build_environment(environ: Mapping[str, str], arch_list: str, cuda_home: Path, jobs: int) -> dict[str, str]:
    """The environment of the mmcv build: CUDA forced (no GPU needed), the architectures, headers, parallel jobs."""
    return {**environ, **BUILD_VARIABLES, ARCH_VARIABLE: arch_list, "CUDA_HOME": str(cuda_home),
            "CPATH": include_path(environ, cuda_home), "MAX_JOBS": str(jobs)}


def wheel_cache_dir(cache: Path, mmcv_version: str, torch_version: str, arch_list: str) -> Path:
    """Where the wheel of one (mmcv, torch, Python, architectures) build is kept."""
    archs = re.sub(r"[^0-9A-Za-z.]+", "_", arch_list).strip("_")
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache.expanduser() / "wheels" / f"mmcv-{mmcv_version}-torch{torch_version}-{python}-sm{archs}"


def build_wheel(mmcv_version: str, environ: Mapping[str, str], out_dir: Path) -> Path:
    """Compile mmcv from its source archive into a wheel in ``out_dir`` (kept only when the build succeeded).

    ``--no-binary mmcv`` and ``--no-cache-dir``: pip neither installs a wheel it finds (a CPU build in a
    find-links folder) nor reuses one it built before; ``--no-build-isolation``: the build sees this torch.
    """
    partial = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.partial.", dir=out_dir.parent))
    command = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir",
               "--no-binary", "mmcv", "-w", str(partial), f"mmcv=={mmcv_version}"]
    print("building:", " ".join(command), flush=True)
    if subprocess.run(command, env=dict(environ)).returncode != 0:
        shutil.rmtree(partial)
        raise BuildError(f"the mmcv {mmcv_version} build failed (output above)")
    partial.rename(out_dir)
    return cached_wheel(out_dir)


def cached_wheel(directory: Path) -> Path:
    """The one mmcv wheel in a cache folder."""
    wheels = sorted(directory.glob("mmcv-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"{directory}: expected one mmcv wheel, found {len(wheels)}; delete the folder to rebuild")
    return wheels[0]


@dataclass(frozen=True)
class CudaOps:
    """What the installed mmcv's compiled extension holds.

    Attributes:
        mmcv: mmcv's version.
        extension: the path of the compiled extension (mmcv/_ext*.so).
        cuda: the CUDA version it was compiled against, ``"not available"`` for a build without CUDA.
        compiler: the host compiler that built it.
        sass: compute capabilities with compiled kernels, e.g. ``["9.0"]``.
        ptx: compute capabilities with PTX, which the driver compiles for newer GPUs.
    """

    mmcv: str
    extension: str
    cuda: str
    compiler: str
    sass: list[str]
    ptx: list[str]

    @property
    def compiled(self) -> bool:
        """Built with CUDA and holding kernels."""
        return self.cuda != NOT_COMPILED and bool(self.sass or self.ptx)

    def runs_on(self, capability: tuple[int, int]) -> bool:
        """Whether a GPU of this compute capability finds kernels: SASS of its major version and a minor no newer,
        or PTX no newer than the GPU."""
        sass = [_capability(arch) for arch in self.sass]
        ptx = [_capability(arch) for arch in self.ptx]
        return (any(major == capability[0] and minor <= capability[1] for major, minor in sass)
                or any(arch <= capability for arch in ptx))

    def describe(self) -> str:
        kernels = f"kernels for {', '.join(self.sass) or 'none'}; PTX for {', '.join(self.ptx) or 'none'}"
        return f"mmcv {self.mmcv} ({self.extension}): CUDA {self.cuda}, {self.compiler}; {kernels}"


def inspect_mmcv() -> CudaOps:
    """Read the installed mmcv's compiled extension (imports mmcv.ops' info functions; no GPU needed)."""
    import mmcv
    from mmcv.ops import get_compiler_version, get_compiling_cuda_version

    extension = Path(importlib.util.find_spec("mmcv._ext").origin)
    sass, ptx = fatbin_archs(elf_section(extension, FATBIN_SECTION) or b"")
    return CudaOps(mmcv=mmcv.__version__, extension=str(extension), cuda=get_compiling_cuda_version(),
                   compiler=get_compiler_version(), sass=sass, ptx=ptx)


def elf_section(path: Path, name: str) -> bytes | None:
    """The bytes of the section ``name`` of a 64-bit little-endian ELF file (a shared library), None without it."""
    data = path.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise BuildError(f"{path}: not a 64-bit little-endian ELF file")
    section_offset, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, section_offset + index * entry_size) for index in range(count)]
    names_offset = headers[names_index][4]
    for name_at, _, _, _, offset, size in headers:
        start = names_offset + name_at
        if data[start:data.index(b"\0", start)].decode() == name:
            return data[offset:offset + size]
    return None


def fatbin_archs(fatbin: bytes) -> tuple[list[str], list[str]]:
    """(SASS, PTX) compute capabilities in a CUDA fat binary section: a sequence of fat binaries (magic, version,
    header size, size), each a sequence of entries (kind, header size, payload size, ..., SM number at byte 28)."""
    sass: set[int] = set()
    ptx: set[int] = set()
    position = 0
    while position + 16 <= len(fatbin):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", fatbin, position)
        if magic != FATBIN_MAGIC:  # sections are padded between fat binaries
            position += 8
            continue
        entry, end = position + header_size, position + header_size + size
        while entry < end:
            kind, _, entry_header_size, payload_size = struct.unpack_from("<HHIQ", fatbin, entry)
            sm, = struct.unpack_from("<I", fatbin, entry + 28)
            (ptx if kind == FATBIN_PTX else sass).add(sm)
            entry += entry_header_size + payload_size
        position = end
    return [f"{sm // 10}.{sm % 10}" for sm in sorted(sass)], [f"{sm // 10}.{sm % 10}" for sm in sorted(ptx)]


def check_installed() -> CudaOps:
    """Inspect mmcv in a fresh interpreter (the one this process imported may be the one just replaced);
    BuildError unless it holds CUDA kernels."""
    answer = subprocess.run([sys.executable, "-m", MODULE, "check", "--json"], capture_output=True, text=True)
    if answer.returncode not in (0, 1):
        raise BuildError(f"importing the installed mmcv failed:\n{answer.stderr.strip()}")
    ops = CudaOps(**json.loads(answer.stdout.strip().splitlines()[-1]))
    if not ops.compiled:
        raise BuildError(f"the installed mmcv has no CUDA ops: {ops.describe()}")
    return ops


def build(mmcv_version: str, site: str | None, cache: Path, jobs: int) -> CudaOps:
    """Build (or take from the cache) mmcv with its CUDA ops, install it over any mmcv, and check it."""
    import torch

    site_arch_list = None
    if site:
        from tsd_study.launch.sites import SiteError, load_site

        try:
            site_arch_list = load_site(site).cuda_arch_list
        except SiteError as error:
            raise BuildError(str(error)) from None
    if not torch.version.cuda:
        raise BuildError(f"torch {torch.__version__} is a CPU build: setup-gpu needs the CUDA build "
                         f"(conda env of environment.yml)")
    arch_list, source = resolve_arch_list(os.environ, site_arch_list, torch_archs())
    cuda_home = find_cuda_home(os.environ)
    print(f"mmcv {mmcv_version} with CUDA ops for torch {torch.__version__}: {ARCH_VARIABLE}={arch_list} "
          f"({source}), CUDA_HOME={cuda_home}", flush=True)
    directory = wheel_cache_dir(cache, mmcv_version, torch.__version__, arch_list)
    if directory.is_dir():
        wheel = cached_wheel(directory)
        print(f"using the wheel built before: {wheel}")
    else:
        directory.parent.mkdir(parents=True, exist_ok=True)
        wheel = build_wheel(mmcv_version, build_environment(os.environ, arch_list, cuda_home, jobs), directory)
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)]
    if subprocess.run(install).returncode != 0:
        raise BuildError(f"installing {wheel} failed (output above)")
    return check_installed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build, install and check mmcv with its CUDA ops")
    build_parser.add_argument("--mmcv", required=True, help="mmcv version (the pin in constraints.txt)")
    build_parser.add_argument("--site", help=f"SLURM site profile whose cuda_arch_list to use when {ARCH_VARIABLE} "
                                             f"is unset")
    build_parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (default: %(default)s)")
    build_parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel compile jobs (MAX_JOBS)")
    check_parser = commands.add_parser("check", help="what the installed mmcv was compiled with; exit 1 without "
                                                     "CUDA ops")
    check_parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            ops = build(args.mmcv, args.site, args.cache, args.jobs)
        else:
            ops = inspect_mmcv()
            if args.json:
                print(json.dumps(asdict(ops)))
                return 0 if ops.compiled else 1
    except BuildError as error:
        print(f"mmcv CUDA build: error: {error}", file=sys.stderr)
        return 2
    print(ops.describe())
    return 0 if ops.compiled else 1


if __name__ == "__main__":
    sys.exit(main())
