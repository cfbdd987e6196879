"""The HTTP API shared by every host: routes, status codes, problem answers, hostile input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrepo.api import ROUTES, Api, Request, Response
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


def call(api: Api, method: str, path: str, body: Any = None, *, raw: bytes | None = None, **extra: Any) -> Response:
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return api.handle(
        Request(
            method, path, extra.get("query", {}), extra.get("headers", {"content-type": "application/json"}), payload
        )
    )


def assert_problem(response: Response, status: int, *fragments: str) -> None:
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    for fragment in fragments:
        assert fragment in problem["detail"], problem["detail"]


def register_body(artifact_id: str, **override: Any) -> dict[str, Any]:
    return {"experimentId": "exp1", "runArtifactId": artifact_id, "registeredBy": "alice", **override}


def test_health(api: Api) -> None:
    response = call(api, "GET", "/api/health")
    assert (response.status, response.json()) == (200, {"status": "ok"})


def test_register_answers_201_with_a_camel_case_model(api: Api, artifact_id: str) -> None:
    response = call(api, "POST", "/api/register", register_body(artifact_id, description="first"))
    assert response.status == 201
    model = response.json()
    assert model["version"] == 1
    assert model["runArtifactId"] == artifact_id
    assert model["description"] == "first"
    assert set(model) >= {"experimentId", "registeredBy", "registeredAt", "sha256", "size", "tags", "runId"}
    assert response.headers["Location"] == "/api/experiments/exp1/models/1"


def test_idempotency_key_header_returns_the_same_version(api: Api, artifact_id: str) -> None:
    headers = {"content-type": "application/json", "idempotency-key": "abc-123"}
    first = call(api, "POST", "/api/register", register_body(artifact_id), headers=headers)
    again = call(api, "POST", "/api/register", register_body(artifact_id), headers=headers)
    assert first.json() == again.json()
    listed = call(api, "GET", "/api/experiments/exp1/models").json()
    assert [m["version"] for m in listed["items"]] == [1]


def test_model_routes(api: Api, artifact_id: str) -> None:
    for _ in range(3):
        call(api, "POST", "/api/register", register_body(artifact_id))
    page = call(api, "GET", "/api/experiments/exp1/models", query={"limit": "2"}).json()
    assert [m["version"] for m in page["items"]] == [3, 2]
    rest = call(api, "GET", "/api/experiments/exp1/models", query={"limit": "2", "cursor": page["nextCursor"]}).json()
    assert [m["version"] for m in rest["items"]] == [1] and rest["nextCursor"] is None
    assert call(api, "GET", "/api/experiments/exp1/models/latest").json()["version"] == 3
    assert call(api, "GET", "/api/experiments/exp1/models/2").json()["version"] == 2
    download = call(api, "GET", "/api/experiments/exp1/models/2/download")
    assert download.status == 200 and download.stream is not None
    assert b"".join(download.stream) == b"weights"
    download.stream.close()
    assert download.headers["Content-Length"] == "7"
    assert download.headers["Content-Disposition"] == "attachment; filename*=UTF-8''model.bin"


def test_tag_and_deployment_routes(api: Api, artifact_id: str) -> None:
    call(api, "POST", "/api/register", register_body(artifact_id))
    call(api, "POST", "/api/register", register_body(artifact_id))
    tagged = call(api, "PUT", "/api/experiments/exp1/models/1/tags/stage", {"value": "gold", "by": "bob"})
    assert (tagged.status, tagged.json()["tags"]) == (200, {"stage": "gold"})
    untagged = call(api, "DELETE", "/api/experiments/exp1/models/1/tags/stage", query={"by": "bob"})
    assert (untagged.status, untagged.json()["tags"]) == (200, {})
    assert_problem(call(api, "DELETE", "/api/experiments/exp1/models/1/tags/stage"), 400, "'by'")
    deployed = call(
        api, "POST", "/api/experiments/exp1/deployments", {"version": 1, "target": "production", "deployedBy": "c"}
    )
    assert deployed.status == 201 and deployed.json()["version"] == 1
    call(api, "POST", "/api/experiments/exp1/deployments", {"version": 2, "target": "production", "deployedBy": "c"})
    rolled = call(api, "POST", "/api/experiments/exp1/deployments/production/rollback", {"deployedBy": "d"})
    assert (rolled.status, rolled.json()["version"]) == (201, 1)
    current = call(api, "GET", "/api/experiments/exp1/deployments").json()["items"]
    assert [(d["target"], d["version"]) for d in current] == [("production", 1)]
    history = call(api, "GET", "/api/experiments/exp1/deployments/production").json()
    assert history["current"]["version"] == 1
    assert [d["version"] for d in history["history"]] == [1, 2, 1]
    audit = call(api, "GET", "/api/experiments/exp1/audit").json()["items"]
    assert [e["action"] for e in audit][-3:] == ["model.deployed"] * 3


def test_artifact_and_rejection_routes(api: Api, repo: ModelRepository, artifact_id: str) -> None:
    items = call(api, "GET", "/api/runs/run1/artifacts").json()["items"]
    assert [a["runArtifactId"] for a in items] == [artifact_id]
    assert call(api, "GET", f"/api/artifacts/{artifact_id}").json()["name"] == "model.bin"
    assert call(api, "GET", "/api/runs/unknown-run/artifacts").json() == {"items": []}
    record(repo, "misplaced.bin", b"x")
    rejections = call(api, "GET", "/api/rejections").json()["items"]
    assert [(r["key"], "layout" in r["reason"]) for r in rejections] == [("misplaced.bin", True)]
    assert call(api, "GET", "/api/runs/run1/audit").json()["items"][0]["action"] == "artifact.recorded"


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (None, ("needs a JSON body",)),
        ([1, 2], ("JSON object",)),
        ("just a string", ("JSON object",)),
        ({}, ("experimentId: Field required", "registeredBy: Field required")),
        ({"experimentId": "e", "registeredBy": "x"}, ("give either runArtifactId (one file) or runId and prefix",)),
        ({"experimentId": 5, "runArtifactId": "r~x", "registeredBy": "a"}, ("experimentId",)),
        ({"experimentId": "exp 1", "runArtifactId": "r~x", "registeredBy": "a"}, ("experimentId 'exp 1' is invalid",)),
        ({"experimentId": "exp1", "runArtifactId": "x", "registeredBy": "a", "extra": 1}, ("extra",)),
        ({"experimentId": "exp1", "runArtifactId": "x" * 400, "registeredBy": "a"}, ("runArtifactId",)),
        ({"experimentId": "exp1", "runArtifactId": "run1~x", "registeredBy": "a" * 200}, ("longer than 128",)),
        ({"experimentId": "exp1", "runArtifactId": "run1~x", "registeredBy": "a\u202eb"}, ("bidirectional",)),
        ({"experimentId": "exp1", "runArtifactId": "run1~x", "registeredBy": "a\nb"}, ("one line",)),
        (
            {"experimentId": "exp1", "runArtifactId": "x", "registeredBy": "a", "description": "d" * 5000},
            ("description",),
        ),
        ({"experimentId": "exp1", "runArtifactId": "nope", "registeredBy": "alice"}, ("malformed",)),
    ],
)
def test_bad_register_bodies_get_400_naming_the_problem(api: Api, body: Any, fragments: tuple[str, ...]) -> None:
    raw = b"" if body is None else json.dumps(body).encode()
    assert_problem(call(api, "POST", "/api/register", raw=raw), 400, *fragments)


def test_unparseable_and_oversized_bodies(api: Api) -> None:
    assert_problem(call(api, "POST", "/api/register", raw=b"{not json"), 400, "not valid JSON")
    assert_problem(call(api, "POST", "/api/register", raw=b"\xff\xfe{}"), 400)
    deep = b"[" * 150_000 + b"]" * 150_000  # beyond the 256 KiB body limit
    assert_problem(call(api, "POST", "/api/register", raw=deep), 413)
    deep_but_small = b'{"experimentId":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_problem(call(api, "POST", "/api/register", raw=deep_but_small), 400)
    assert_problem(call(api, "POST", "/api/register", raw=b"{" + b" " * (10 * 1024 * 1024) + b"}"), 413, "larger than")
    response = call(api, "POST", "/api/register", raw=b"{}", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "application/json")


def test_state_conflicts_map_to_404_409_422(api: Api, repo: ModelRepository, artifact_id: str) -> None:
    unknown = artifact_id[:-1] + ("a" if artifact_id[-1] != "a" else "b")
    assert_problem(call(api, "POST", "/api/register", register_body(unknown)), 404, "not recorded")
    assert_problem(
        call(api, "POST", "/api/register", register_body(artifact_id, experimentId="exp2")), 422, "belongs to"
    )
    record(repo, "exp1/run1/model.bin", b"overwritten")
    assert_problem(call(api, "POST", "/api/register", register_body(artifact_id)), 409, "overwritten")
    assert_problem(call(api, "GET", "/api/experiments/exp1/models/latest"), 404, "no registered versions")
    assert_problem(
        call(api, "POST", "/api/experiments/exp1/deployments", {"version": 3, "target": "prod", "deployedBy": "x"}),
        404,
        "no version 3",
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/api/nothing", 404, "no such route"),
        ("GET", "/nothing", 404, "no such route"),
        ("POST", "/", 405, "not allowed"),
        ("DELETE", "/api/health", 405, "not allowed"),
        ("GET", "/api/experiments/exp%201/models", 400, "experimentId"),
        ("GET", "/api/experiments/exp1/models/abc", 400, "version 'abc'"),
        ("GET", "/api/experiments/exp1/models/0", 400, "version '0'"),
        ("GET", "/api/experiments/exp1/models/01", 400, "version '01'"),
        ("GET", "/api/experiments/exp1/models/-1", 400, "version"),
        ("GET", "/api/experiments/exp1/models/99999999999", 400, "version"),
        ("GET", "/api/experiments/%ff/models", 400, "percent-encoded"),
        ("GET", "/api/runs/..%2F..%2Fetc/artifacts", 400, "runId"),
        ("GET", "/api/experiments/exp1/deployments/Prod", 400, "target"),
        ("GET", "/api/artifacts/garbage", 400, "malformed"),
    ],
)
def test_bad_paths(api: Api, method: str, path: str, status: int, fragment: str) -> None:
    assert_problem(call(api, method, path), status, fragment)


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", "1e3", ""])
def test_bad_limits(api: Api, limit: str) -> None:
    assert_problem(call(api, "GET", "/api/experiments/exp1/models", query={"limit": limit}), 400, "limit")


def test_bad_cursors(api: Api) -> None:
    assert_problem(call(api, "GET", "/api/experiments/exp1/models", query={"cursor": "%%%"}), 400, "cursor")
    foreign = call(api, "GET", "/api/rejections", query={"cursor": "bG9nfjE"})  # a cursor of another listing
    assert_problem(foreign, 400, "different listing")


def test_every_route_has_a_summary_and_the_mutating_ones_a_schema() -> None:
    for route in ROUTES:
        assert route.summary, route.template
        if route.method in ("POST", "PUT"):
            assert route.body is not None, route.template


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
register_like = st.fixed_dictionaries(
    {},
    optional={
        "experimentId": st.one_of(st.text(max_size=140), json_values),
        "runArtifactId": st.one_of(st.text(max_size=40), json_values),
        "registeredBy": st.one_of(st.text(max_size=140), json_values),
        "description": st.one_of(st.text(max_size=50), json_values),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(register_like, json_values))
def test_no_register_body_gets_a_server_error(api: Api, body: Any) -> None:
    response = call(api, "POST", "/api/register", body)
    assert response.status in (400, 404, 409, 422), response.body
    assert response.json()["detail"]


path_segments = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from([r for r in ROUTES if "{" in r.template]),
    values=st.lists(path_segments, min_size=3, max_size=3),
    body=json_values,
)
def test_no_path_gets_a_server_error(api: Api, route: Any, values: list[str], body: Any) -> None:
    from urllib.parse import quote

    path = route.template
    for value in values:
        if "{" not in path:
            break
        start, end = path.index("{"), path.index("}")
        path = path[:start] + quote(value, safe="") + path[end + 1 :]
    response = call(api, route.method, path, body)
    assert response.status < 500, (path, response.body)
    if response.stream is not None:
        response.stream.close()
