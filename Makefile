# Two entry points (see README): `make smoke` sets up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The real BreastMNIST beside the checkout (CI, this team's machines); elsewhere medmnist's ~/.medmnist + download.
SHARED_DATA := $(abspath ../shared/data)
export GENMED_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/breastmnist.npz),$(SHARED_DATA),)

.PHONY: setup smoke test test-fast slurm-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

smoke: setup
	$(BIN)/python launch/grid.py --grid rare_sweep --profile smoke
	$(BIN)/python launch/collect.py --grid rare_sweep --profile smoke

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not slurm" -q

slurm-test: setup
	bash .ci/slurm-tests.sh

test: setup
	$(BIN)/python -m pytest -m "not slurm" -q
	bash .ci/slurm-tests.sh
