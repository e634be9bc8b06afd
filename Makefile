# tsd-study: every target does its own set-up. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
STAMP := $(VENV)/.tsd-study-installed

# mmcv 2.1.0 ships only a source archive: its compiled CPU ops are built once per (mmcv, torch, python)
# and the wheel is kept outside the repository, so a fresh clone on the same machine skips the build.
pin = $(shell sed -n 's/^$(1)==//p' constraints.txt)
CACHE_DIR ?= $(HOME)/.cache/tsd-study
MMCV_WHEELS := $(CACHE_DIR)/wheels/mmcv-$(call pin,mmcv)-torch$(call pin,torch)-cpu-py311
MMCV_BUILD_FLAGS := MMCV_WITH_OPS=1 MAX_JOBS=$(shell nproc) CFLAGS="-DNDEBUG -O3 -g0 -Wall -fwrapv"

PROFILE ?= cpu

.PHONY: setup setup-gpu gpu-check system-deps reproduce test lab lock clean-venv

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch setuptools wheel ninja numpy
	@if ! ls $(MMCV_WHEELS)/mmcv-*.whl >/dev/null 2>&1; then \
	  echo "building mmcv $(call pin,mmcv) with its CPU ops (once per machine, about 6 minutes on 2 cores)"; \
	  tmp=$$(mktemp -d); \
	  env $(MMCV_BUILD_FLAGS) $(PIP) wheel -q --no-build-isolation --no-deps --no-cache-dir -w $$tmp mmcv==$(call pin,mmcv); \
	  mkdir -p $(dir $(MMCV_WHEELS)) && mv $$tmp $(MMCV_WHEELS).partial.$$$$ && mv -T $(MMCV_WHEELS).partial.$$$$ $(MMCV_WHEELS); \
	fi
	$(PIP) install -q -c constraints.txt $(MMCV_WHEELS)/mmcv-*.whl
	$(PIP) install -q -c constraints.txt -e ".[test]"
	@touch $@
	@echo "environment ready: $(VENV)"

# In the activated conda environment of environment.yml, on a GPU cluster's login node (no GPU needed) or a GPU node:
# mmcv compiled with its CUDA ops, then tsd-study (tsd_study/mmcv_cuda.py; docs/gpu.md). The architectures are
# $$TORCH_CUDA_ARCH_LIST if set, else the cuda_arch_list of the site profile SITE, else every one torch has kernels for.
# The wheel is kept in $(CACHE_DIR)/wheels, one per architecture list, for later set-ups and offline GPU machines.
SITE ?=
JOBS ?= $(shell nproc)
setup-gpu:
	python -m tsd_study.mmcv_cuda build --mmcv $(call pin,mmcv) --cache $(CACHE_DIR) --jobs $(JOBS) $(if $(SITE),--site $(SITE))
	python -m pip install --no-deps -e .

# The prepared check of the GPU path on a machine with one NVIDIA GPU, after setup-gpu (docs/gpu.md): 9 minutes at
# most, no internet; one summary file, $(GPU_CHECK_OUT)/summary.json.
GPU_CHECK_OUT ?= work_dirs/gpu-check
gpu-check:
	python cluster/gpu-check --out $(GPU_CHECK_OUT)

reproduce: setup
	$(BIN)/tsd-study reproduce --profile $(PROFILE)

# Debian packages the tests drive (a real browser for the rendered report); the SLURM tests install their own.
# Without root or apt-get the browser tests skip, and say why in the test summary.
system-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (Debian) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver >/dev/null; \
	else echo "note: chromium not installed and no root/apt-get: the browser tests will be skipped"; fi

test: setup system-deps
	@$(BIN)/python -m pytest $(PYTEST_ARGS) || { status=$$?; \
	  if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status; }

lab: setup
	$(BIN)/jupyter lab notebooks/

# After adding or upgrading a dependency in the venv: rewrite constraints.txt as the full lock of the CPU environment.
lock:
	{ sed -n '/^#/p' constraints.txt; \
	  $(PIP) freeze --all --exclude-editable | grep -v '^pip==' | sed -e 's/^torch==\(.*\)+cpu$$/torch==\1/' -e 's|^mmcv @ .*|mmcv==$(call pin,mmcv)|'; \
	  echo "torchvision==$(call pin,torchvision)"; } | awk '/^#/ || !seen[tolower($$0)]++' > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean-venv:
	rm -rf $(VENV)
