"""The lifecycle through the real API function on moto: the approval gate and @production."""

from __future__ import annotations

from typing import Any

from tests.aws.conftest import EventSourceMapping, Stack, api_event, call_api
from tests.aws.test_api_function import recorded_artifact, register_event
from tests.fixtures.lifecycle import walk


def send(method: str, path: str, body: Any, query: dict[str, str] | None) -> tuple[int, dict[str, str], Any]:
    return call_api(api_event(method, path, body=body, query=query))


def test_the_gate_and_at_production_on_every_version_route(stack: Stack, trigger: EventSourceMapping) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    for _ in range(3):
        assert call_api(register_event(run_artifact_id))[0] == 201
    walk(send)
