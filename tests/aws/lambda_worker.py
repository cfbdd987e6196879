"""One Lambda container per process: the concurrency test starts 32 of these at once.

Importing this module imports the API function the way Lambda does (CodeUri first on sys.path),
so a fork server that preloads it hands every forked container a ready module. Kept free of
test-only imports (pytest, moto) so that a container starts in milliseconds.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What template.yaml's Globals give every function before its modules are imported (Powertools
# reads them at import time).
POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "modelrepo",
    "POWERTOOLS_METRICS_NAMESPACE": "modelrepo",
}
for _name, _value in POWERTOOLS_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions_aws"
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))
api_function = importlib.import_module("api_function")
aws_bootstrap = importlib.import_module("aws_bootstrap")


@dataclass(frozen=True)
class FakeLambdaContext:
    function_name: str = "modelrepo-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:modelrepo-test"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    log_group_name: str = "/aws/lambda/modelrepo-test"
    log_stream_name: str = "test"
    remaining_millis: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


def invoke_api(environment: dict[str, str], event: dict[str, Any], barrier: Any, results: Any) -> None:
    """Build a warm container from `environment`, wait for the others, then invoke the handler."""
    try:
        os.environ.update(environment)
        aws_bootstrap.repository()  # clients built before the barrier, so the invocations truly overlap
        barrier.wait(timeout=60)
        results.put(api_function.handler(event, FakeLambdaContext()))
    except BaseException as error:
        results.put({"error": repr(error)})
        raise
