# cos-bench — the two commands the README promises, plus the benchmark and the GPU check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch: on machines without a GPU this avoids a multi-GB CUDA download.
TORCH ?= torch==2.13.0
# Local copies of the datasets when present (CI, offline machines); otherwise the Hub is used.
DATA_DIR ?= $(wildcard ../shared/data)
DATA_OPT := $(if $(DATA_DIR),--data-dir $(DATA_DIR))

.PHONY: setup run test lint format bench gpu-check clean

$(BIN)/cos-bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/cos-bench

# The main job: the offline Qwen2.5-Coder pair on HumanEval, vanilla vs sd vs cos, WE and CD.
run: setup
	$(BIN)/cos-bench run --allow-code-eval $(DATA_OPT)

# The test suite (no downloads, no GPU); two workers for the two cores. loadgroup keeps the tests
# that share one Ray cluster (xdist_group "ray") on one worker, so only one cluster is started.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The committed CPU measurements (issue 5): long — hours on 2 cores.
bench: setup
	$(BIN)/cos-bench sweep --config configs/cpu-benchmark.yaml --out results/cpu-benchmark --allow-code-eval $(DATA_OPT)

# Engine check on a CUDA machine with no network: random-weight Qwen2.5 shapes, eager and compiled
# side by side, <= 6 minutes on an H200 (scripts/device_gpu_check.sh is the lent machine's one command).
# Not through setup, which installs the CPU build of torch and needs the network: GPU_PYTHON is
# an interpreter that already has a CUDA torch and transformers >= 5.24.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
