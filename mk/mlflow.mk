# MLflow's own client against modelrepo's MLflow registry API (tests/mlflow/): the mlflow pinned in
# bench/requirements.txt (one pin for both), in its own virtualenv beside the core with its client
# and AWS extras (the request-auth plugin signs with the client's SigV4); the tests run the MLflow
# side in it as a subprocess. Not bench/.venv: that one installs the core without boto3, and what it
# installs is the benchmark's to change.
MLFLOW_VENV := .venv-mlflow
MLFLOW_PIN := $(shell grep -E '^mlflow==' bench/requirements.txt)
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed-$(shell cat bench/requirements.txt shared/pyproject.toml mk/mlflow.mk | cksum | cut -d' ' -f1)

.PHONY: mlflow-setup mlflow-clean

$(MLFLOW_STAMP): bench/requirements.txt shared/pyproject.toml mk/mlflow.mk
	@test -n "$(MLFLOW_PIN)" || { echo "bench/requirements.txt pins no mlflow==<version>"; exit 1; }
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet '$(MLFLOW_PIN)' -e 'shared[client,aws]'
	rm -f $(MLFLOW_VENV)/.installed-*
	touch $@

mlflow-setup: $(MLFLOW_STAMP)

pytest: mlflow-setup

clean: mlflow-clean
mlflow-clean:
	rm -rf $(MLFLOW_VENV)
