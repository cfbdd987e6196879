"""Faults below the SDK: botocore's `before-send` event answers a call with an error response
instead of sending it.

The rest of the stack runs as it would against AWS: botocore parses the error, its retry handler
decides whether to retry (throttling and 5xx are retried with jittered backoff, within the client's
`total_max_attempts`), and whatever outlasts that reaches the adapter's error translation.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders


@dataclass(frozen=True)
class Fault:
    status: int
    code: str
    message: str


PROVISIONED_THROUGHPUT = Fault(
    400,
    "ProvisionedThroughputExceededException",
    "The level of configured provisioned throughput for the table was exceeded.",
)
THROTTLING = Fault(400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
INTERNAL_ERROR = Fault(500, "InternalServerError", "Internal server error")
SERVICE_UNAVAILABLE = Fault(503, "ServiceUnavailable", "Service unavailable")
ACCESS_DENIED = Fault(400, "AccessDeniedException", "User is not authorized to perform: dynamodb:GetItem")


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_kwargs: Any) -> Iterator[bytes]:
        yield self.body


# (operation, ClientRequestToken or None) → the fault to answer with, or None to send the call.
Chooser = Callable[[str, str | None], Fault | None]


class SdkFaults:
    """Injects DynamoDB errors into one client; counts what was injected and what went out."""

    def __init__(self, client: Any, choose: Chooser) -> None:
        self.client = client
        self.choose = choose
        self.sent: Counter[str] = Counter()  # calls (attempts, retries included) that went out
        self.injected: Counter[str] = Counter()  # error codes answered instead
        self._lock = threading.Lock()

    def _before_send(self, request: Any, event_name: str, **_kwargs: Any) -> AWSResponse | None:
        operation = event_name.rsplit(".", 1)[-1]
        fault = self.choose(operation, _request_token(request))
        with self._lock:
            if fault is None:
                self.sent[operation] += 1
                return None
            self.injected[fault.code] += 1
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{fault.code}", "message": fault.message})
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.0"
        headers["x-amzn-RequestId"] = "injected-fault"
        return AWSResponse(request.url, fault.status, headers, _Raw(body.encode()))

    @contextmanager
    def installed(self) -> Iterator[SdkFaults]:
        self.client.meta.events.register("before-send.dynamodb", self._before_send, unique_id=id(self))
        try:
            yield self
        finally:
            self.client.meta.events.unregister("before-send.dynamodb", unique_id=id(self))


def _request_token(request: Any) -> str | None:
    """The ClientRequestToken of a TransactWriteItems attempt: botocore's retries carry the same one."""
    body = getattr(request, "body", None)
    if not body:
        return None
    try:
        token = json.loads(body).get("ClientRequestToken")
    except (ValueError, AttributeError):
        return None
    return str(token) if token else None


def always(fault: Fault, *operations: str) -> Chooser:
    """`fault` for every call of these operations (all operations if none are named)."""
    return lambda operation, _token: fault if not operations or operation in operations else None


def first(count: int, fault: Fault, operation: str) -> Chooser:
    """`fault` for the first `count` calls of one operation, then nothing."""
    remaining = [count]
    lock = threading.Lock()

    def choose(called: str, _token: str | None) -> Fault | None:
        with lock:
            if called != operation or remaining[0] <= 0:
                return None
            remaining[0] -= 1
            return fault

    return choose
