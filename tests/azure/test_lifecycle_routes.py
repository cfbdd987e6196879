"""The lifecycle through the real HTTP function on Azurite: the approval gate and @production."""

from __future__ import annotations

import json
from typing import Any

from tests.azure.conftest import AzureApp
from tests.azure.host import http
from tests.azure.test_functions import recorded
from tests.fixtures.lifecycle import walk


def send(method: str, path: str, body: Any, query: dict[str, str] | None) -> tuple[int, dict[str, str], Any]:
    response = http(method, path, body=body, params=query)
    raw = response.get_body()
    headers = dict(response.headers)
    return response.status_code, headers, json.loads(raw) if raw and "json" in headers.get("Content-Type", "") else raw


def test_the_gate_and_at_production_on_every_version_route(azure_app: AzureApp) -> None:
    artifact = recorded(azure_app, "exp1/run1/model.onnx", b"weights")
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    for _ in range(3):
        assert http("POST", "/api/register", body=body).status_code == 201
    walk(send)
