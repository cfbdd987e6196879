# AWS: the SAM CLI in its own virtualenv (it pins its own boto3 and cfn-lint), then the template's
# static checks, checkov, and a real `sam build`, whose output is smoke-tested by importing every
# handler. `make bench-aws` runs the long AWS tests at full size.

SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM_BUILD_DIR := .aws-sam/build
# The functions run on python3.12 and `sam build` insists on finding it on PATH. The SAM
# virtualenv is made with it, so its bin/ provides `python3.12` to `sam build`.
PYTHON312 ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
SAM_ENV := SAM_CLI_TELEMETRY=0 PATH="$(abspath $(SAM_VENV))/bin:$$PATH"

AWS_CHECKOV_REPORT := build/checkov-aws.json

.PHONY: aws-setup aws-lint aws-checkov aws-build aws-clean bench-aws

$(SAM_STAMP):
	@test -n "$(PYTHON312)" || { echo "sam build needs Python 3.12 (the Lambda runtime): install it or pass PYTHON312=/path/to/python3.12"; exit 1; }
	rm -rf $(SAM_VENV)
	$(PYTHON312) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

aws-setup: $(SAM_STAMP)

aws-lint: aws-setup
	$(SAM_ENV) $(SAM_VENV)/bin/cfn-lint template.yaml
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint --region us-east-1 --template-file template.yaml

# checkov runs from the virtualenv mk/azure.mk builds (one pinned checkov for both clouds); its JSON
# report must show the template parsed, no failed check, and a reason for every skip.
aws-checkov: setup
	@$(MAKE) --no-print-directory $(CHECKOV)
	mkdir -p build
	$(CHECKOV) --file template.yaml --framework cloudformation --skip-download --output json > $(AWS_CHECKOV_REPORT) || true
	$(BIN)/python tools/checkov_gate.py $(AWS_CHECKOV_REPORT) cloudformation template.yaml

aws-build: aws-setup
	rm -rf $(SAM_BUILD_DIR)
	$(SAM_ENV) $(SAM_VENV)/bin/sam build --template-file template.yaml --build-dir $(SAM_BUILD_DIR)
	$(SAM_VENV)/bin/python tests/aws/smoke_build.py $(SAM_BUILD_DIR)

TEST_STEPS += aws-lint aws-checkov aws-build

# The 5,000-upload burst through the AWS event path and a larger register-history storm, on moto.
bench-aws: setup
	MODELREPO_AWS_BURST=5000 MODELREPO_AWS_STORM_OPERATIONS=256 POWERTOOLS_LOG_LEVEL=WARNING $(BIN)/python -m pytest -s -o timeout=1800 \
		tests/aws/test_load.py tests/aws/test_faults.py -k "burst or storm"

aws-clean:
	rm -rf $(SAM_VENV) .aws-sam

clean: aws-clean
