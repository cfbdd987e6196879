# The two commands of the README: `make run` and `make test`. Everything installs into .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat shared/pyproject.toml requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: setup run test lint typecheck pytest clean

# Checks run by `make test`, in order; fragments in mk/ append their own.
TEST_STEPS := lint typecheck

$(STAMP): shared/pyproject.toml requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "modelrepo needs Python >= 3.11; set PYTHON=...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e 'shared[local,aws,azure]' -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/modelrepo serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup --max-worker-restart=0  # a crashed worker fails the run; replacing it can hang loadgroup

-include mk/*.mk

test: $(TEST_STEPS) pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
