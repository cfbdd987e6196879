"""What a cold container pays for before its first answer (bench/README.md, Cold start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.aws.conftest import EventSourceMapping, Stack, api_event, call_api, new_container
from tests.aws.test_api_function import recorded_artifact, register_event

REPO = Path(__file__).resolve().parents[2]
HANDLERS = ("api_function", "dispatch_function", "reconcile_function", "record_function")


def test_a_metadata_read_builds_no_s3_client_and_a_registration_builds_one(
    stack: Stack, trigger: EventSourceMapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most API calls only read the table: a cold container answering one builds the DynamoDB
    client alone. The S3 client is built when an operation first needs the bytes (pinning on
    register), once, and used from then on."""
    run_artifact_id = recorded_artifact(stack, trigger)
    import aws_bootstrap

    new_container(aws_bootstrap)
    built: list[str] = []
    real: Any = boto3.session.Session.client

    def client(self: boto3.session.Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        built.append(service_name)
        return real(self, service_name, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", client)
    status, _, body = call_api(api_event("GET", "/api/experiments/exp1/models"))
    assert (status, body["items"]) == (200, [])
    assert built == ["dynamodb"]

    for expected in (1, 2):
        status, _, body = call_api(register_event(run_artifact_id))
        assert (status, body["version"]) == (201, expected), body
    assert built == ["dynamodb", "s3"]


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_cold_handler_imports_neither_the_x_ray_sdk_nor_powertools_parser_models(handler: str) -> None:
    """Importing a handler in a fresh interpreter loads neither
    - the X-Ray SDK: AWS put it in maintenance mode (2026-02-25, end of support 2027-02-25), Lambda
      traces the invocations itself (`Tracing: Active`), and its recorder built two X-Ray clients
      at every cold start; nor
    - Powertools' parser models (pydantic models of every event source), which its batch utilities
      import when pydantic is already imported, and which no handler uses; nor
    - the core's HTTP layer, but in the API function."""
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(REPO / 'functions_aws')!r}, {str(REPO / 'shared')!r}]\n"
        f"import {handler}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    environment = {"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "modelrepo"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment, cwd=REPO
    )
    imported = set(json.loads(done.stdout))
    assert {"aws_lambda_powertools", "modelrepo", "pydantic"} <= {name.split(".")[0] for name in imported}
    assert not {name for name in imported if name.split(".")[0] == "aws_xray_sdk"}
    assert not {name for name in imported if name.startswith("aws_lambda_powertools.utilities.parser")}
    # The HTTP layer (routes, request and response models) is the API function's alone.
    assert ("modelrepo.api" in imported) == (handler == "api_function")
