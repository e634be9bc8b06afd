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

.PHONY: setup reproduce test lab clean-venv

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

reproduce: setup
	$(BIN)/tsd-study reproduce --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest

lab: setup
	$(BIN)/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
