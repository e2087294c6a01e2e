# Two commands on a fresh clone:  `make run` (set up + run the whole chain)  and  `make test`.
# Setup steps leave stamp files, so a second `make run` reinstalls nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin
PIPELINE ?= wmrl
KEDRO_ARGS ?=
PYTEST_ARGS ?=
export KEDRO_DISABLE_TELEMETRY := true
export MS_SKIP_ASSET_DOWNLOAD_PROMPT := 1
export PATH := $(BIN):$(PATH)

.PHONY: setup run test repro viz viz-build bench-features gpu-smoke bench clean-data help
help:
	@echo "make run    - set up (venv, pinned deps, simulator rendering, DVC) and run kedro run --pipelines=$(PIPELINE)"
	@echo "make test   - set up and run the test suite"
	@echo "make repro  - dvc repro (one stage per pipeline), then dvc status"
	@echo "make viz    - kedro viz on http://127.0.0.1:4141"
	@echo "make gpu-smoke - every paper-scale stage for a few steps on CUDA (scripts/gpu_smoke.py; needs a GPU)"
	@echo "make bench - where the time goes: trainer throughput, cache vs on-the-fly, imagined vs real env (docs/benchmarks.md)"

$(VENV)/.installed: requirements.lock.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.lock.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $@

.vulkan/.ready: scripts/setup_vulkan.sh
	bash scripts/setup_vulkan.sh
	@mkdir -p .vulkan && touch $@

.dvc/.ready: $(VENV)/.installed
	bash scripts/setup_dvc.sh
	@touch $@

setup: $(VENV)/.installed .vulkan/.ready .dvc/.ready

run: setup
	$(BIN)/kedro run --pipelines=$(PIPELINE) $(KEDRO_ARGS)

.chromium-ready: scripts/setup_chromium.sh
	bash scripts/setup_chromium.sh
	@touch $@

test: setup .chromium-ready
	$(BIN)/python -m pytest $(PYTEST_ARGS)

repro: setup
	$(BIN)/dvc repro
	$(BIN)/dvc status

viz: setup
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1 --port 4141

viz-build: setup
	$(BIN)/kedro viz build --include-previews

bench-features: setup
	$(BIN)/python scripts/bench_features.py

# Needs a CUDA machine; `python scripts/gpu_smoke.py --device cpu --tiny` checks the script on a CPU.
gpu-smoke: setup
	$(BIN)/python scripts/gpu_smoke.py

bench: setup
	$(BIN)/python scripts/bench_throughput.py
