"""Faults below the Azure SDKs: a transport that answers for the service, or loses its answer.

`FaultyTransport` is the SDKs' own `RequestsTransport` with a plan consulted on every request. The
plan may refuse a request without sending it (503 ServerBusy, 500 OperationTimedOut: nothing was
applied) or let it reach Azurite and then lose the answer (500 OperationTimedOut or a read timeout
after the commit). Everything above it runs for real: the SDK's retry policy and error mapping, the
adapters' translation, the core's retries. The SDK's backoff sleeps go through the transport
(`transport.sleep`), so they are recorded and shortened here instead of slept in full;
`delegate_wrapped_sleeps` makes the SDKs' per-container/table wrappers pass them on too.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.pipeline.transport._requests_basic import RequestsTransportResponse
from azure.core.rest import HttpRequest
from azure.core.rest._requests_basic import RestRequestsTransportResponse
from requests.structures import CaseInsensitiveDict

REASONS = {500: "Internal Server Error", 503: "Server Busy"}


@dataclass(frozen=True)
class Fault:
    """`status` 0 means no answer at all (a read timeout); `after_commit` lets the request through first."""

    name: str
    status: int
    code: str
    after_commit: bool = False


BUSY = Fault("busy", 503, "ServerBusy")
TIMEOUT_BEFORE = Fault("timeout-before-commit", 500, "OperationTimedOut")
TIMEOUT_AFTER = Fault("timeout-after-commit", 500, "OperationTimedOut", after_commit=True)
LOST_AFTER = Fault("lost-after-commit", 0, "", after_commit=True)

Plan = Callable[[Any], Fault | None]


def is_table_batch(request: Any) -> bool:
    return bool(request.method == "POST" and request.url.endswith("/$batch"))


def body_of(request: Any) -> bytes:
    content = getattr(request, "content", None)
    return content if isinstance(content, bytes) else b""


def first(count: int, fault: Fault, where: Callable[[Any], bool]) -> Plan:
    """`fault` for the first `count` requests that `where` selects, then nothing."""
    left = [count]
    lock = threading.Lock()

    def plan(request: Any) -> Fault | None:
        if not where(request):
            return None
        with lock:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return fault

    return plan


class FaultyTransport(RequestsTransport):  # type: ignore[misc]  # azure-core's transports are untyped
    def __init__(self, plan: Plan | None = None, *, time_scale: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.time_scale = time_scale
        self.sleeps: list[float] = []  # the backoffs the SDK's retry policies asked for
        self.sent: list[tuple[str, str, str]] = []  # (method, url, what happened)
        self._lock = threading.Lock()

    def send(self, request: Any, **kwargs: Any) -> Any:
        fault = self.plan(request) if self.plan is not None else None
        self._note(request, fault.name if fault else "sent")
        if fault is None:
            return super().send(request, **kwargs)
        if fault.after_commit:
            answer = super().send(request, **kwargs)  # reached the service: it committed
            close = getattr(answer, "close", None)
            if callable(close):
                close()
            if fault.status == 0:
                raise ServiceResponseTimeoutError("injected: read timed out after the request was sent")
        return _fabricate(request, fault, stream=bool(kwargs.get("stream")))

    def sleep(self, duration: float) -> None:
        with self._lock:
            self.sleeps.append(duration)
        time.sleep(duration * self.time_scale)

    def _note(self, request: Any, what: str) -> None:
        with self._lock:
            self.sent.append((request.method, request.url, what))

    def count(self, what: str, where: Callable[[str, str], bool] = lambda method, url: True) -> int:
        with self._lock:
            return sum(1 for method, url, happened in self.sent if happened == what and where(method, url))


def _fabricate(request: Any, fault: Fault, *, stream: bool) -> Any:
    """The error answer the service would give, as the SDK's transport would hand it up."""
    if "json" in request.headers.get("Accept", ""):
        body = json.dumps({"odata.error": {"code": fault.code, "message": {"lang": "en-US", "value": "injected"}}})
        content_type = "application/json;odata=minimalmetadata"
    else:
        body = f"<?xml version='1.0' encoding='utf-8'?><Error><Code>{fault.code}</Code><Message>x</Message></Error>"
        content_type = "application/xml"
    raw = body.encode()
    response = requests.Response()
    response.status_code = fault.status
    response.reason = REASONS.get(fault.status, "Error")
    response.headers = CaseInsensitiveDict(
        {"x-ms-error-code": fault.code, "Content-Type": content_type, "Content-Length": str(len(raw))}
    )
    response._content = raw
    response._content_consumed = True
    response.raw = io.BytesIO(raw)
    response.url = request.url
    response.encoding = "utf-8"
    if isinstance(request, HttpRequest):
        answer = RestRequestsTransportResponse(request=request, internal_response=response, block_size=4096)  # type: ignore[no-untyped-call]
        if not stream:
            answer.read()
        return answer
    return RequestsTransportResponse(request, response, 4096)  # type: ignore[no-untyped-call]


def delegate_wrapped_sleeps(monkeypatch: Any) -> None:
    """Clients made by `get_*_client` wrap the parent's transport in a `TransportWrapper` that sends
    through it but sleeps on its own; make it sleep through the wrapped transport (tests only)."""
    from azure.data.tables import _base_client as tables_base
    from azure.storage.blob._shared import base_client as blob_base
    from azure.storage.queue._shared import base_client as queue_base

    for module in (tables_base, blob_base, queue_base):
        monkeypatch.setattr(module.TransportWrapper, "sleep", lambda self, d: self._transport.sleep(d), raising=False)
