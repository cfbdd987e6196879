"""Principals on Azure: who App Service authentication signed in (X-MS-CLIENT-PRINCIPAL-NAME, which
it sets and strips from clients) is recorded beside the self-declared actor in every audit entry and
event; MODELREPO_ACTOR_MUST_BE_PRINCIPAL makes the actor have to be that name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions_azure import bootstrap
from tests.azure.conftest import AzureApp
from tests.azure.host import blob_created, http

SIGNED_IN = {"X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}


def body_of(response: Any) -> Any:
    return json.loads(response.get_body())


def recorded(azure_app: AzureApp) -> str:
    azure_app.upload("exp1/run1/model.bin", b"weights")
    azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, "exp1/run1/model.bin"))
    [artifact] = body_of(http("GET", "/api/runs/run1/artifacts"))["items"]
    return str(artifact["runArtifactId"])


def test_the_signed_in_principal_is_recorded_beside_the_actor(azure_app: AzureApp) -> None:
    body = {"experimentId": "exp1", "runArtifactId": recorded(azure_app), "registeredBy": "alice"}
    assert http("POST", "/api/register", body=body, headers=SIGNED_IN).status_code == 201
    deploy = {"version": 1, "target": "prod", "deployedBy": "release"}
    assert http("POST", "/api/experiments/exp1/deployments", body=deploy).status_code == 201  # a function key only

    audit = body_of(http("GET", "/api/experiments/exp1/audit"))["items"]
    assert [(e["actor"], e.get("principal")) for e in audit] == [("alice", "alice@contoso.com"), ("release", None)]
    events = body_of(http("GET", "/api/experiments/exp1/events"))["items"]
    assert [e.get("principal") for e in events] == ["alice@contoso.com", None]


def test_an_actor_must_be_the_signed_in_principal_when_the_app_says_so(
    azure_app: AzureApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_artifact_id = recorded(azure_app)
    monkeypatch.setenv("MODELREPO_ACTOR_MUST_BE_PRINCIPAL", "true")
    bootstrap.reset()
    body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": "mallory"}
    refused = http("POST", "/api/register", body=body, headers=SIGNED_IN)
    assert refused.status_code == 403 and "alice@contoso.com" in body_of(refused)["detail"]
    keyed_only = http("POST", "/api/register", body={**body, "registeredBy": "alice@contoso.com"})
    assert keyed_only.status_code == 403  # a function key names no one: no principal, no change
    assert body_of(http("GET", "/api/experiments/exp1/models"))["items"] == []
    named = http("POST", "/api/register", body={**body, "registeredBy": "alice@contoso.com"}, headers=SIGNED_IN)
    assert named.status_code == 201
