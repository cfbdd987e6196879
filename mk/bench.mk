# Benchmarks (bench/): `make bench` runs them at full size into bench/results/ and refreshes the
# table in bench/README.md; `make test` runs every scenario at a smoke size (tests/bench/).
# The bench has its own virtualenv, so that MLflow's pins never meet the project's test tools.
BENCH_VENV := bench/.venv
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell cat bench/requirements.txt shared/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: bench bench-setup bench-cold-setup bench-typecheck

$(BENCH_STAMP): bench/requirements.txt shared/pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet -r bench/requirements.txt -e 'shared[local]'
	rm -f $(BENCH_VENV)/.installed-*
	touch $@

bench-setup: $(BENCH_STAMP)

# The cold-start scenario (bench/coldstart.py) runs python3.12, the Lambda runtime: its own venv with
# the runtime interface client, and the Functions app's packages installed as the remote build does.
COLD_VENV := bench/.venv-cold
COLD_STAMP := $(COLD_VENV)/.installed-$(shell cat bench/requirements-coldstart.txt bench/constraints-coldstart-azure.txt requirements.txt shared/pyproject.toml | cksum | cut -d' ' -f1)

$(COLD_STAMP): bench/requirements-coldstart.txt bench/constraints-coldstart-azure.txt requirements.txt shared/pyproject.toml
	@test -n "$(PYTHON312)" || { echo "the cold-start bench needs Python 3.12 (the Lambda runtime): pass PYTHON312=/path/to/python3.12"; exit 1; }
	rm -rf $(COLD_VENV)
	$(PYTHON312) -m venv $(COLD_VENV)
	$(COLD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COLD_VENV)/bin/python -m pip install --quiet -r bench/requirements-coldstart.txt
	$(COLD_VENV)/bin/python -m pip install --quiet --target $(COLD_VENV)/azure-app -r requirements.txt -c bench/constraints-coldstart-azure.txt
	touch $@

bench-cold-setup: $(COLD_STAMP)

# BENCH_ARGS passes options through, e.g. `make bench BENCH_ARGS="--only register"`.
bench: setup bench-setup bench-cold-setup aws-build
	$(BENCH_BIN)/python -m bench --readme $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-aws  # the AWS event path's 5,000-upload burst and the long storm

bench-typecheck: setup
	$(BIN)/mypy bench

TEST_STEPS += bench-typecheck
pytest: bench-setup bench-cold-setup
