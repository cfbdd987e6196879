"""Authenticated principals: every event and audit entry records who the host authenticated, beside
the actor the request named; an option makes the two have to agree."""

from __future__ import annotations

import json
from typing import Any

from modelrepo.api import Api, Request, Response
from modelrepo.service import ModelRepository
from tests.unit.conftest import concurrently, record


def call(api: Api, method: str, path: str, body: Any = None, *, principal: str | None, **query: str) -> Response:
    payload = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, query, {"content-type": "application/json"}, payload, principal))


def artifact(repo: ModelRepository) -> str:
    recorded = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert recorded is not None
    return recorded.run_artifact_id


def test_every_event_and_audit_entry_names_the_authenticated_principal(repo: ModelRepository) -> None:
    api = Api(repo)
    artifact_id = artifact(repo)

    def register(n: int) -> int:
        body = {"experimentId": "exp1", "runArtifactId": artifact_id, "registeredBy": f"claims-{n}"}
        answer = call(api, "POST", "/api/register", body, principal=f"arn:aws:iam::123456789012:user/u{n}")
        assert answer.status == 201, answer.body
        return int(answer.json()["version"])

    # Registrations from many threads share batches: each keeps its own principal all the same.
    versions = concurrently(16, register)
    assert sorted(versions) == list(range(1, 17))
    events = repo.experiment_events("exp1", limit=100).items
    assert {(e.actor, e.principal) for e in events} == {
        (f"claims-{n}", f"arn:aws:iam::123456789012:user/u{n}") for n in range(16)
    }
    tagged = call(api, "PUT", "/api/experiments/exp1/models/1/tags/k", {"value": "v", "by": "bob"}, principal="key:ci")
    assert tagged.status == 200
    entry = repo.experiment_audit("exp1", limit=100).items[-1]
    assert (entry.actor, entry.principal) == ("bob", "key:ci")
    untold = call(api, "PUT", "/api/experiments/exp1/models/1/tags/k", {"value": "w", "by": "bob"}, principal=None)
    assert untold.status == 200 and repo.experiment_events("exp1", limit=100).items[-1].principal is None
    assert "principal" not in repo.experiment_events("exp1", limit=100).items[-1].to_json()


def test_an_actor_must_equal_the_principal_when_the_repository_says_so(repo: ModelRepository) -> None:
    api = Api(repo, actor_must_be_principal=True)
    artifact_id = artifact(repo)
    body = {"experimentId": "exp1", "runArtifactId": artifact_id, "registeredBy": "alice"}
    refused = call(api, "POST", "/api/register", body, principal="mallory")
    assert refused.status == 403 and "'mallory'" in refused.json()["detail"] and "'alice'" in refused.json()["detail"]
    assert call(api, "POST", "/api/register", body, principal=None).status == 403
    assert repo.list_models("exp1").items == [], "nothing was written"
    assert call(api, "POST", "/api/register", body, principal="alice").status == 201
    untag = call(api, "DELETE", "/api/experiments/exp1/models/1/tags/k", principal="alice", by="bob")
    assert untag.status == 403
    assert call(api, "GET", "/api/experiments/exp1/models", principal=None).status == 200, "reading needs no match"
    assert call(api, "GET", "/api/health", principal=None).status == 200
