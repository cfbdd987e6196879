"""`modelrepo.Client`: every route, errors, idempotency, retries, paging, verified downloads and
connection reuse, in-process and over a real loopback HTTP front of the core's `Api`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.api import ASSET_MEDIA, PAGE_MEDIA, ROUTES, Request, Route
from modelrepo.client import (
    ApiError,
    BadRequest,
    BusyError,
    Client,
    ClientError,
    ConflictError,
    DigestMismatch,
    InProcessTransport,
    NotAuthorized,
    NotFoundError,
    NotRecorded,
    Reply,
    UnprocessableError,
)
from modelrepo.client.auth import BearerAuth
from modelrepo.errors import Busy, Conflict, InvalidInput, NotFound, Unprocessable
from tests.client.conftest import WEIGHTS, Repo, api_handler, make_repo
from tests.client.loopback import Answer, Loopback, Wire, loopback


class Spy:
    """A transport that records each request on its way to the in-process API."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.sent: list[Request] = []

    def send(self, request: Request, *, stream: bool = False) -> Reply:
        self.sent.append(request)
        return self.inner.send(request, stream=stream)

    def follow(self, location: str, *, relative_to: str | None = None, stream: bool = False) -> Reply:
        return self.inner.follow(location, relative_to=relative_to, stream=stream)

    def close(self) -> None:
        self.inner.close()


def is_page_file(route: Route) -> bool:
    return route.media in (PAGE_MEDIA, *ASSET_MEDIA)


def route_of(request: Request) -> Route:
    """The route the API dispatches `request` to (the first whose pattern and method match, as Api does)."""
    return next(r for r in ROUTES if r.method == request.method and r.pattern.fullmatch(request.path))


# Each route of the API and a client call that uses it, in an order in which each call succeeds.
CALLS: dict[tuple[str, str], Callable[[Client, dict[str, Any]], Any]] = {
    ("GET", "/api/health"): lambda c, d: c.health(),
    ("GET", "/api/openapi.json"): lambda c, d: c.openapi(),
    ("GET", "/api/runs/{runId}/artifacts"): lambda c, d: c.run_artifacts("run1"),
    ("GET", "/api/runs/{runId}/audit"): lambda c, d: list(c.run_audit("run1")),
    ("GET", "/api/artifacts/{runArtifactId}"): lambda c, d: c.artifact(d["id"]),
    ("GET", "/api/rejections"): lambda c, d: list(c.rejections()),
    ("GET", "/api/dead-letters"): lambda c, d: c.dead_letters(),
    ("POST", "/api/register"): lambda c, d: [c.register("exp1", d["id"], "alice") for _ in range(2)],
    ("GET", "/api/experiments/{experimentId}/models"): lambda c, d: list(c.models("exp1")),
    ("GET", "/api/experiments/{experimentId}/models/{version}"): lambda c, d: c.model("exp1", 1),
    ("GET", "/api/experiments/{experimentId}/models/{version}/download"): lambda c, d: c.download("exp1", 1).read(),
    ("PUT", "/api/experiments/{experimentId}/models/{version}/tags/{key}"): lambda c, d: c.set_tag(
        "exp1", 1, "stage", "gold", "bob"
    ),
    ("DELETE", "/api/experiments/{experimentId}/models/{version}/tags/{key}"): lambda c, d: c.delete_tag(
        "exp1", 1, "stage", "bob"
    ),
    ("POST", "/api/experiments/{experimentId}/deployments"): lambda c, d: [
        *[c.deploy("exp1", v, "production", "carol") for v in (1, 2)],
        c.deploy("exp1", 2, "staging", "carol"),
    ],
    ("GET", "/api/experiments/{experimentId}/deployments"): lambda c, d: c.deployments("exp1"),
    ("GET", "/api/experiments/{experimentId}/deployments/{target}"): lambda c, d: list(
        c.deployment_history("exp1", "production")
    ),
    ("POST", "/api/experiments/{experimentId}/deployments/{target}/rollback"): lambda c, d: c.rollback(
        "exp1", "production", "dave"
    ),
    ("GET", "/api/experiments/{experimentId}/audit"): lambda c, d: list(c.experiment_audit("exp1")),
    ("DELETE", "/api/experiments/{experimentId}/deployments/{target}"): lambda c, d: c.remove_deployment(
        "exp1", "staging", "carol"
    ),
    ("GET", "/api/runs/{runId}/events"): lambda c, d: list(c.run_events("run1")),
    ("GET", "/api/experiments/{experimentId}/events"): lambda c, d: list(c.events("exp1", after=1)),
    ("GET", "/api/experiments"): lambda c, d: list(c.experiments(prefix="exp")),
    ("GET", "/api/experiments/{experimentId}"): lambda c, d: c.experiment("exp1"),
    ("PATCH", "/api/experiments/{experimentId}"): lambda c, d: c.describe("exp1", "churn", "bob"),
    ("PUT", "/api/experiments/{experimentId}/tags/{key}"): lambda c, d: c.set_experiment_tag(
        "exp1", "team", "ml", "bob"
    ),
    ("DELETE", "/api/experiments/{experimentId}/tags/{key}"): lambda c, d: c.delete_experiment_tag(
        "exp1", "team", "bob"
    ),
    ("GET", "/api/search/models"): lambda c, d: list(c.search(status="pending")),
    ("PATCH", "/api/experiments/{experimentId}/models/{version}"): lambda c, d: c.update(
        "exp1", 2, "bob", description="second", metrics={"auc": 0.9}
    ),
    ("POST", "/api/experiments/{experimentId}/models/{version}/approval"): lambda c, d: c.approve("exp1", 2, "lead"),
    ("POST", "/api/experiments/{experimentId}/models/{version}/archive"): lambda c, d: c.archive("exp1", 2, "bob"),
    ("POST", "/api/experiments/{experimentId}/models/{version}/restore"): lambda c, d: c.restore("exp1", 2, "bob"),
    ("GET", "/api/experiments/{experimentId}/models/{version}/files"): lambda c, d: c.files("exp1", 2),
    ("GET", "/api/experiments/{experimentId}/models/{version}/files/{path}"): lambda c, d: c.download_file(
        "exp1", 2, "model.bin"
    ).read(),
    ("GET", "/api/experiments/{experimentId}/targets/{target}"): lambda c, d: c.target_policy("exp1", "staging"),
    ("PUT", "/api/experiments/{experimentId}/targets/{target}"): lambda c, d: c.set_target_policy(
        "exp1", "staging", require_approval=True, by="lead"
    ),
    ("DELETE", "/api/experiments/{experimentId}/models/{version}"): lambda c, d: c.delete_version(
        "exp1", 2, "bob", "bad data"
    ),
}


def test_every_route_of_the_api_has_a_client_method(repo: Repo) -> None:
    """A route added to modelrepo.api fails here until the client covers it (and CALLS lists it)."""
    # The web page's own files are for browsers; everything else a program may call.
    assert set(CALLS) == {(route.method, route.template) for route in ROUTES if not is_page_file(route)}
    data = {"id": repo.upload("exp1/run1/model.bin")}
    spy = Spy(InProcessTransport(repo.api))
    client = Client(spy)
    for (method, template), call in CALLS.items():
        before = len(spy.sent)
        call(client, data)
        reached = {(route_of(r).method, route_of(r).template) for r in spy.sent[before:]}
        assert reached == {(method, template)}, (method, template)
    assert client.current_deployment("exp1", "production") is not None
    assert route_of(spy.sent[-1]).template.endswith("/deployments/{target}")


def test_answers_are_typed_records_and_round_trip_to_the_same_json(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/dir/model.bin")
    client = Client.in_process(repo.api)
    [artifact] = client.run_artifacts("run1")
    assert (artifact.name, artifact.size, artifact.sha256) == ("dir/model.bin", len(WEIGHTS), sha(WEIGHTS))
    model = client.register("exp1", run_artifact_id, "alice", description="baseline")
    assert (model.version, model.registered_by, model.description) == (1, "alice", "baseline")
    direct = repo.api.handle(Request("GET", "/api/experiments/exp1/models/1")).json()
    assert client.model("exp1", 1).to_json() == direct
    assert client.model("exp1", "latest").to_json() == direct
    assert client.health() == "ok" and client.openapi()["openapi"].startswith("3.1")


def test_a_newer_service_s_extra_fields_are_kept_not_refused(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    real = api_handler(repo.api)

    def newer(wire: Wire) -> Answer:
        answer = real(wire)
        document = json.loads(answer.body)
        for item in document["items"]:
            item["principal"] = "arn:aws:iam::123456789012:user/alice"
        return Answer(answer.status, answer.headers, json.dumps(document).encode())

    with loopback(newer) as server, Client.over_http(server.url) as client:
        [artifact] = client.run_artifacts("run1")
    assert artifact.run_artifact_id == run_artifact_id
    assert artifact.to_json()["principal"] == "arn:aws:iam::123456789012:user/alice"


def test_problem_answers_raise_the_core_errors_with_their_status(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    client = Client.in_process(repo.api)
    cases: list[tuple[Callable[[], Any], type[ApiError], type[Exception], int, str]] = [
        (lambda: client.register("exp1", "nope", "alice"), BadRequest, InvalidInput, 400, "runArtifactId"),
        (lambda: client.model("exp1", 7), NotFoundError, NotFound, 404, "has no version 7"),
        (lambda: client.model("exp1", "three"), BadRequest, InvalidInput, 400, "version 'three' is invalid"),
        (lambda: client.register("exp2", run_artifact_id, "alice"), UnprocessableError, Unprocessable, 422, "exp1"),
    ]
    client.register("exp1", run_artifact_id, "alice", idempotency_key="ci-build-7")
    other = repo.upload("exp1/run1/other.bin", b"other weights")
    cases.append(
        (
            lambda: client.register("exp1", other, "alice", idempotency_key="ci-build-7"),
            ConflictError,
            Conflict,
            409,
            "already used",
        )
    )
    for call, client_error, core_error, status, text in cases:
        with pytest.raises(client_error) as raised:
            call()
        assert isinstance(raised.value, core_error)
        assert raised.value.status == status and text in raised.value.detail


def test_each_registration_carries_its_own_idempotency_key(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    spy = Spy(InProcessTransport(repo.api))
    client = Client(spy)
    versions = [client.register("exp1", run_artifact_id, "alice").version for _ in range(3)]
    again = client.register("exp1", run_artifact_id, "alice", idempotency_key="build-42").version
    assert client.register("exp1", run_artifact_id, "alice", idempotency_key="build-42").version == again
    assert [*versions, again] == [1, 2, 3, 4]
    keys = [r.headers["idempotency-key"] for r in spy.sent]
    assert len(set(keys[:3])) == 3 and keys[3:] == ["build-42", "build-42"]


def busy_then_api(repo: Repo, busy_answers: int, retry_after: str = "7") -> Callable[[Wire], Answer]:
    """The API, behind a host that first answers 503 to the first `busy_answers` writes."""
    left = [busy_answers]

    def intercept(wire: Wire) -> Answer | None:
        if wire.method != "GET" and left[0] > 0:
            left[0] -= 1
            detail = b'{"status":503,"detail":"busy, retry"}'
            return Answer(503, {"Content-Type": "application/problem+json", "Retry-After": retry_after}, detail)
        return None

    return api_handler(repo.api, before=intercept)


def test_a_503_is_retried_after_its_retry_after_with_the_same_idempotency_key(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    slept: list[float] = []
    with loopback(busy_then_api(repo, 2)) as server, Client.over_http(server.url, sleep=slept.append) as client:
        model = client.register("exp1", run_artifact_id, "alice")
    assert (model.version, slept) == (1, [7.0, 7.0])
    attempts = [w for w in server.requests if w.method == "POST"]
    assert len(attempts) == 3 and len({w.headers["idempotency-key"] for w in attempts}) == 1


def test_retries_are_bounded_and_a_write_without_a_key_is_not_repeated(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    Client.in_process(repo.api).register("exp1", run_artifact_id, "alice")
    slept: list[float] = []
    with loopback(busy_then_api(repo, 10)) as server, Client.over_http(server.url, sleep=slept.append) as client:
        with pytest.raises(BusyError) as exhausted:
            client.register("exp1", run_artifact_id, "alice")
        assert isinstance(exhausted.value, Busy) and exhausted.value.retry_after == 7.0
        assert slept == [7.0, 7.0, 7.0]  # three retries, then the caller decides
        with pytest.raises(BusyError):
            client.deploy("exp1", 1, "production", "carol")  # no idempotency key: not repeated
    assert [w.method for w in server.requests] == ["POST"] * 5
    with (
        loopback(busy_then_api(repo, 1, retry_after="3600")) as server,
        Client.over_http(server.url) as client,
        pytest.raises(BusyError) as later,
    ):
        client.set_tag("exp1", 1, "stage", "gold", "bob")
    assert later.value.retry_after == 3600.0 and len(server.requests) == 1  # longer than it will wait


def test_listings_page_lazily_through_cursors(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    for _ in range(7):
        repo.repository.register_model("exp1", run_artifact_id, "alice")
    spy = Spy(InProcessTransport(repo.api))
    client = Client(spy)
    assert [m.version for m in client.models("exp1", page_size=3)] == [7, 6, 5, 4, 3, 2, 1]
    assert [(r.query.get("limit"), "cursor" in r.query) for r in spy.sent] == [("3", False), ("3", True), ("3", True)]
    spy.sent.clear()
    first_two = client.models("exp1", page_size=3)
    assert [next(first_two).version, next(first_two).version] == [7, 6] and len(spy.sent) == 1
    assert len(list(client.experiment_audit("exp1", page_size=2))) == 7
    with pytest.raises(ValueError, match="page_size"):
        client.models("exp1", page_size=0)


def test_calls_reuse_one_connection(repo: Repo, front: Loopback) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    with Client.over_http(front.url + "/api") as client:
        for _ in range(10):
            client.register("exp1", run_artifact_id, "alice")
            client.run_artifacts("run1")
        assert len(list(client.models("exp1", page_size=4))) == 10
    assert len(front.requests) == 23 and front.connections == 1


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LinkingStore(MemoryArtifactStore):
    """Answers downloads with a link to another host, as S3 and Blob Storage stores do."""

    def __init__(self) -> None:
        super().__init__()
        self.storage_url = ""

    def pinned_link(self, digest: str, *, filename: str, expires_seconds: int) -> str | None:
        return f"{self.storage_url}/registry/{digest}?se=2030-01-01&sig=LINK-SIGNATURE-SECRET&name={quote(filename)}"


@pytest.fixture
def linked() -> Iterator[tuple[Repo, LinkingStore, Loopback, list[bytes]]]:
    store = LinkingStore()
    repo = make_repo(store)
    served: list[bytes] = []  # what the storage serves instead, if anything

    def storage(wire: Wire) -> Answer:
        digest = wire.path.rsplit("/", 1)[-1]
        with store.open_pinned(digest) as data:
            body = served[0] if served else data.read()
        disposition = f"attachment; filename*=UTF-8''{wire.params['name']}"
        return Answer(200, {"Content-Type": "application/octet-stream", "Content-Disposition": disposition}, body)

    with loopback(storage) as host:
        store.storage_url = host.url
        yield repo, store, host, served


def test_a_redirected_download_is_fetched_without_credentials_and_verified(
    linked: tuple[Repo, LinkingStore, Loopback, list[bytes]],
) -> None:
    repo, _, storage, _ = linked
    run_artifact_id = repo.upload("exp1/run1/nested/model.onnx")
    Client.in_process(repo.api).register("exp1", run_artifact_id, "alice")
    with (
        loopback(api_handler(repo.api, key="api-secret-key")) as api,
        Client.over_http(api.url, BearerAuth("api-secret-key")) as client,
    ):
        with client.download("exp1", 1) as download:
            data = b"".join(download)
        assert (data, download.sha256, download.verified, download.filename) == (
            WEIGHTS,
            sha(WEIGHTS),
            True,
            "model.onnx",
        )
    [fetched] = storage.requests
    assert "authorization" not in fetched.headers and "x-functions-key" not in fetched.headers
    assert api.requests[-1].headers["authorization"] == "Bearer api-secret-key"


def test_bytes_that_do_not_match_the_digest_raise_before_the_loop_ends(
    linked: tuple[Repo, LinkingStore, Loopback, list[bytes]],
) -> None:
    repo, _, _, served = linked
    run_artifact_id = repo.upload("exp1/run1/model.onnx")
    Client.in_process(repo.api).register("exp1", run_artifact_id, "alice")
    served.append(WEIGHTS[:-1] + b"!")
    received: list[bytes] = []
    with loopback(api_handler(repo.api)) as api, Client.over_http(api.url) as client:
        download = client.download("exp1", 1)
        with pytest.raises(DigestMismatch, match=f"expected {sha(WEIGHTS)}"):
            for chunk in download:
                received.append(chunk)
    assert b"".join(received) == served[0] and not download.verified


def test_in_process_downloads_stream_and_verify(repo: Repo) -> None:
    run_artifact_id = repo.upload("exp1/run1/model.bin")
    client = Client.in_process(repo.api)
    client.register("exp1", run_artifact_id, "alice")
    with client.download("exp1", 1) as download:
        assert (download.size, download.filename) == (len(WEIGHTS), "model.bin")
        assert download.read() == WEIGHTS and download.verified
    with pytest.raises(ClientError, match="read once"):
        iter(download)


def test_waiting_for_an_upload_polls_with_backoff_until_it_is_recorded(repo: Repo) -> None:
    client = Client.in_process(repo.api)
    info_box: list[str] = []
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the event path records the upload during the third wait
        waits.append(seconds)
        clock[0] += seconds
        if len(waits) == 3:
            info_box.append(repo.upload("exp1/run1/model.bin"))

    etag = hashlib.md5(WEIGHTS).hexdigest()  # the memory store's ETag, as S3 gives for one part
    artifact = client.wait_for_artifact("exp1/run1/model.bin", f'"{etag}"', clock=lambda: clock[0], sleep=sleep)
    assert artifact.run_artifact_id == info_box[0]
    assert waits == [0.25, 0.5, 1.0]

    clock[0], waits[:] = 0.0, []
    with pytest.raises(NotRecorded, match="not recorded within 20 s"):
        client.wait_for_artifact("exp1/run2/other.bin", '"abc"', timeout=20, clock=lambda: clock[0], sleep=sleep)
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 2.25] and clock[0] == 20.0


def test_an_unreachable_service_and_a_refused_credential_are_clear(repo: Repo) -> None:
    with Client.over_http("http://127.0.0.1:9") as client, pytest.raises(ClientError, match="cannot reach"):
        client.health()
    with (
        loopback(api_handler(repo.api, key="right-key-123")) as api,
        Client.over_http(api.url, BearerAuth("wrong-key-456")) as client,
    ):
        with pytest.raises(NotAuthorized) as refused:
            client.run_artifacts("run1")
        assert client.health() == "ok"
    assert refused.value.status == 401 and "wrong-key-456" not in str(refused.value)
