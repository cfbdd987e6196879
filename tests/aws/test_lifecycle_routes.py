"""The lifecycle through the real API function on moto: the approval gate and @production."""

from __future__ import annotations

from typing import Any

import pytest

from tests.aws.conftest import EventSourceMapping, Stack, api_event, call_api, new_container
from tests.aws.test_api_function import recorded_artifact, register_event
from tests.fixtures.lifecycle import walk


def send(method: str, path: str, body: Any, query: dict[str, str] | None) -> tuple[int, dict[str, str], Any]:
    return call_api(api_event(method, path, body=body, query=query))


def test_the_gate_and_at_production_on_every_version_route(stack: Stack, trigger: EventSourceMapping) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    for _ in range(3):
        assert call_api(register_event(run_artifact_id))[0] == 201
    walk(send)


def test_the_callers_iam_identity_is_the_principal_of_what_it_changes(
    stack: Stack, trigger: EventSourceMapping, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aws_bootstrap

    run_artifact_id = recorded_artifact(stack, trigger)
    event = register_event(run_artifact_id, who="alice")  # signed by arn:aws:iam::123456789012:user/alice
    assert call_api(event)[0] == 201
    [entry] = [e for e in call_api(api_event("GET", "/api/experiments/exp1/audit"))[2]["items"]]
    assert (entry["actor"], entry["principal"]) == ("alice", "arn:aws:iam::123456789012:user/alice")
    [cloud_event] = call_api(api_event("GET", "/api/experiments/exp1/events"))[2]["items"]
    assert cloud_event["principal"] == "arn:aws:iam::123456789012:user/alice"

    monkeypatch.setenv("MODELREPO_ACTOR_MUST_BE_PRINCIPAL", "true")
    new_container(aws_bootstrap)
    status, _, refused = call_api(register_event(run_artifact_id, who="mallory"))
    assert status == 403 and "arn:aws:iam::123456789012:user/alice" in refused["detail"]
    named = register_event(run_artifact_id, who="arn:aws:iam::123456789012:user/alice")
    assert call_api(named)[0] == 201
