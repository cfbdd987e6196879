# Azure (issue 4): Azurite for the tests, and the checks of the Bicep in infra/.
# - Azurite is pinned in package.json + package-lock.json and installed into ./node_modules with
#   `npm ci`; the tests start node_modules/.bin/azurite themselves (tests/fixtures/azure.py).
# - checkov runs from its own virtualenv (its pins would fight the app's) and its JSON report must
#   show no parsing error: checkov exits 0 on a Bicep file it cannot parse.

AZURITE_STAMP := node_modules/.installed-$(shell cksum < package-lock.json | cut -d' ' -f1)
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV := build/checkov-$(CHECKOV_VERSION)
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: azurite infra-check clean-azure

$(AZURITE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

azurite: $(AZURITE_STAMP)

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION)

infra-check: setup $(CHECKOV)
	$(CHECKOV) --directory infra --framework bicep --skip-download --output json --quiet > build/checkov.json || true
	$(BIN)/python tools/checkov_gate.py build/checkov.json bicep infra/

setup: $(AZURITE_STAMP)
pytest: $(AZURITE_STAMP)
TEST_STEPS += infra-check

clean: clean-azure
clean-azure:
	rm -rf node_modules build/checkov-* build/checkov.json
