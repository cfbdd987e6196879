"""Named API keys on `modelrepo serve`: the key a request carries names its principal, which every
audit entry and event records beside the self-declared actor; MODELREPO_ACTOR_MUST_BE_PRINCIPAL
makes a change's actor have to be that name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrepo.errors import InvalidInput
from modelrepo.settings import LocalSettings
from tests.local.conftest import Answer, Served, start_serve, stop_serve, wait_for

KEYS = {"alice": "alice-secret-1", "ci-bot": "ci-secret-0022"}
NAMED = ",".join(f"{name}:{key}" for name, key in KEYS.items())


def as_(served: Served, who: str, method: str, path: str, body: object = None) -> Answer:
    headers = {"Authorization": f"Bearer {KEYS[who]}"}
    return served.request(method, path, body, headers=headers, authorized=False)


def recorded(served: Served, who: str) -> str:
    served.drop("exp1/run1/model.bin", b"weights")
    [artifact] = wait_for(lambda: as_(served, who, "GET", "/api/runs/run1/artifacts").json()["items"], timeout=60)
    return str(artifact["runArtifactId"])


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root", environment={"MODELREPO_API_KEYS": NAMED})
    yield running
    stop_serve(running)


def test_the_name_of_the_key_is_the_principal_of_every_change(keyed: Served) -> None:
    run_artifact_id = recorded(keyed, "alice")
    body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": "alice"}
    assert as_(keyed, "alice", "POST", "/api/register", body).status == 201
    deploy = {"version": 1, "target": "production", "deployedBy": "release"}
    assert as_(keyed, "ci-bot", "POST", "/api/experiments/exp1/deployments", deploy).status == 201

    audit = as_(keyed, "alice", "GET", "/api/experiments/exp1/audit").json()["items"]
    assert [(e["action"], e["actor"], e.get("principal")) for e in audit] == [
        ("model.registered", "alice", "alice"),
        ("model.deployed", "release", "ci-bot"),  # the actor says what it likes; the principal is the key's
    ]
    events = as_(keyed, "ci-bot", "GET", "/api/experiments/exp1/events").json()["items"]
    assert [(e["type"], e["principal"]) for e in events] == [
        ("io.modelrepo.version.registered", "alice"),
        ("io.modelrepo.deployment.created", "ci-bot"),
    ]
    wrong = keyed.request("GET", "/api/experiments/exp1/audit", headers={"Authorization": "Bearer alice-secret-2"})
    assert wrong.status == 401 and keyed.request("GET", "/api/health", authorized=False).status == 200


def test_an_actor_must_be_the_key_s_name_when_the_repository_says_so(tmp_path: Path) -> None:
    served = start_serve(
        tmp_path / "root", environment={"MODELREPO_API_KEYS": NAMED, "MODELREPO_ACTOR_MUST_BE_PRINCIPAL": "true"}
    )
    try:
        run_artifact_id = recorded(served, "alice")
        body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": "ci-bot"}
        refused = as_(served, "alice", "POST", "/api/register", body)
        assert refused.status == 403 and "'alice'" in refused.json()["detail"]
        assert as_(served, "alice", "GET", "/api/experiments/exp1/models").json()["items"] == []  # nothing written
        assert as_(served, "alice", "POST", "/api/register", {**body, "registeredBy": "alice"}).status == 201
    finally:
        stop_serve(served)


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"MODELREPO_API_KEYS": "alice"}, "entry 'alice' must be NAME:KEY"),
        ({"MODELREPO_API_KEYS": "alice:alice-secret-1,alice:other-secret-2"}, "names 'alice' twice"),
        ({"MODELREPO_API_KEYS": "alice:short"}, "at least 8 printable characters"),
        ({"MODELREPO_API_KEYS": "al ice:alice-secret-1"}, "API key name 'al ice'"),
        ({"MODELREPO_API_KEYS": "a:same-secret-1,b:same-secret-1"}, "two API keys are the same"),
        (
            {"MODELREPO_API_KEYS": "default:alice-secret-1", "MODELREPO_API_KEY": "other-secret-2"},
            "MODELREPO_API_KEYS names it too",
        ),
        ({"MODELREPO_ACTOR_MUST_BE_PRINCIPAL": "true"}, "needs API keys"),
    ],
)
def test_bad_key_settings_are_one_clear_error(environment: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidInput, match="invalid settings") as refused:
        LocalSettings.from_environment(environment)
    assert problem in refused.value.detail and "secret-" not in refused.value.detail  # no key in the message


def test_the_unnamed_key_is_named_default_and_named_keys_open_a_non_loopback_binding() -> None:
    settings = LocalSettings.from_environment({"MODELREPO_API_KEY": "the-one-key", "MODELREPO_API_KEYS": NAMED})
    assert settings.credentials == {**KEYS, "default": "the-one-key"}
    LocalSettings.from_environment({"MODELREPO_API_KEYS": NAMED}, host="0.0.0.0").require_safe_binding()
