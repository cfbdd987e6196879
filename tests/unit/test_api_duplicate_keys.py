"""A JSON body with a key given twice is ambiguous (parsers disagree on which value wins): refused."""

from __future__ import annotations

import json

import pytest

from modelrepo.api import Api, Request, Response
from modelrepo.service import ModelRepository
from tests.unit.conftest import record


@pytest.fixture
def api(repo: ModelRepository) -> Api:
    return Api(repo)


@pytest.fixture
def artifact_id(repo: ModelRepository) -> str:
    artifact = record(repo, "exp1/run1/model.bin", b"weights").artifact
    assert artifact is not None
    return artifact.run_artifact_id


def call(api: Api, method: str, path: str, raw: bytes) -> Response:
    return api.handle(Request(method, path, {}, {"content-type": "application/json"}, raw))


def assert_duplicate(response: Response, key: str) -> None:
    assert response.status == 400, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert f"'{key}'" in detail and "more than once" in detail, detail


def test_a_register_body_with_a_key_twice_is_refused_naming_the_key(api: Api, artifact_id: str) -> None:
    # pydantic alone takes the last value: "someone-else" would have been recorded as the registrar
    raw = (
        f'{{"experimentId": "exp1", "runArtifactId": "{artifact_id}", '
        f'"registeredBy": "alice", "registeredBy": "someone-else"}}'
    ).encode()
    assert_duplicate(call(api, "POST", "/api/register", raw), "registeredBy")
    assert api.repository.list_models("exp1").items == []  # nothing was registered


def test_a_key_spelled_twice_with_escapes_is_still_the_same_key(api: Api, artifact_id: str) -> None:
    raw = (
        f'{{"experimentId": "exp1", "experiment\\u0049d": "exp2", "runArtifactId": "{artifact_id}", '
        f'"registeredBy": "alice"}}'
    ).encode()
    assert_duplicate(call(api, "POST", "/api/register", raw), "experimentId")


def test_duplicates_are_refused_on_every_route_that_takes_a_body(api: Api, artifact_id: str) -> None:
    register = {"experimentId": "exp1", "runArtifactId": artifact_id, "registeredBy": "alice"}
    assert call(api, "POST", "/api/register", json.dumps(register).encode()).status == 201
    exp = "/api/experiments/exp1"
    cases = [
        ("POST", f"{exp}/deployments", b'{"version": 1, "target": "a", "target": "b", "deployedBy": "m"}', "target"),
        ("POST", f"{exp}/deployments/prod/rollback", b'{"deployedBy": "m", "deployedBy": "n"}', "deployedBy"),
        ("PUT", f"{exp}/models/1/tags/stage", b'{"value": "a", "by": "m", "value": "b"}', "value"),
    ]  # fmt: skip
    for method, path, raw, key in cases:
        assert_duplicate(call(api, method, path, raw), key)
    assert api.repository.get_model("exp1", 1).tags == {}
    assert api.repository.list_deployments("exp1") == []


def test_a_duplicate_inside_a_nested_value_is_refused_too(api: Api) -> None:
    raw = b'{"experimentId": "exp1", "runArtifactId": "x", "registeredBy": "a", "description": {"k": 1, "k": 2}}'
    assert_duplicate(call(api, "POST", "/api/register", raw), "k")


def test_the_same_key_in_two_different_objects_is_not_a_duplicate(api: Api) -> None:
    raw = b'{"experimentId": "exp1", "runArtifactId": "x", "registeredBy": "a", "description": [{"k": 1}, {"k": 2}]}'
    response = call(api, "POST", "/api/register", raw)
    assert response.status == 400
    assert "more than once" not in response.json()["detail"]
    assert "description" in response.json()["detail"]  # refused for its type, as before
