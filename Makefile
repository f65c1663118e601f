# The README's commands. `make serve` runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test lint serve loadtest bench chart clean

setup:
	@scripts/setup.sh

# The main job: demo voice + embedded MLflow + real Triton + gateway on loopback (Ctrl-C stops all).
serve:
	scripts/serve.sh $(ARGS)

# A bounded headless Locust run against make serve's stack (started for the run if not up).
loadtest: setup
	scripts/loadtest.sh $(ARGS)

test: setup
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory lint

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	scripts/bench.sh

chart: setup
	scripts/chart.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
