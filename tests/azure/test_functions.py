"""The functions registered on `function_app.app`, called with real HttpRequest / InputStream /
EventGridEvent objects after uploading real blobs to Azurite (see tests/azure/host.py)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest

from modelrepo.errors import StorageError
from tests.azure.conftest import AzureApp
from tests.azure.host import FUNCTIONS, POISON_THRESHOLD, blob_created, http, problem_of

KEY = "exp1/run1/model.onnx"


def body_of(response: Any) -> Any:
    return json.loads(response.get_body())


def recorded(app: AzureApp, key: str, data: bytes) -> dict[str, Any]:
    """Upload, deliver the BlobCreated event once, and return the recorded run artifact."""
    app.upload(key, data)
    app.host.deliver(blob_created(app.service, app.uploads, key))
    run_id = key.split("/")[1]
    [artifact] = [a for a in body_of(http("GET", f"/api/runs/{run_id}/artifacts"))["items"] if a["key"] == key]
    return artifact  # type: ignore[no-any-return]


def audit_actions(path: str) -> list[str]:
    return [entry["action"] for entry in body_of(http("GET", path, params={"limit": "1000"}))["items"]]


def test_the_app_registers_an_event_grid_blob_trigger_and_keyed_http_functions() -> None:
    bindings = {name: json.loads(f.get_function_json())["bindings"][0] for name, f in FUNCTIONS.items()}
    assert bindings["record_upload"] == {
        "direction": "IN",
        "type": "blobTrigger",
        "name": "blob",
        "path": "%MODELREPO_UPLOADS_CONTAINER%/{name}",
        "connection": "ModelRepoStorage",
        "source": "EventGrid",
    }
    assert (bindings["api"]["route"], bindings["api"]["authLevel"]) == ("{*path}", "FUNCTION")
    assert (bindings["health"]["route"], bindings["health"]["authLevel"]) == ("health", "ANONYMOUS")
    assert set(FUNCTIONS) == {
        "record_upload",
        "api",
        "health",
        "openapi",
        "ui",
        "reconcile",
        "deliver_events",
        "sweep_events",
    }
    assert (bindings["ui"]["route"], bindings["ui"]["authLevel"]) == ("ui/{*asset}", "ANONYMOUS")  # the web page


def test_health(azure_app: AzureApp) -> None:
    response = http("GET", "/api/health")
    assert (response.status_code, body_of(response)) == (200, {"status": "ok"})


def test_an_event_delivered_three_times_is_recorded_once(azure_app: AzureApp) -> None:
    azure_app.upload(KEY, b"weights v1")
    event = blob_created(azure_app.service, azure_app.uploads, KEY)
    for _ in range(3):
        azure_app.host.deliver(event)
    assert (azure_app.host.invocations, azure_app.host.failures) == (3, [])
    artifacts = body_of(http("GET", "/api/runs/run1/artifacts"))["items"]
    assert [(a["key"], a["size"]) for a in artifacts] == [(KEY, len(b"weights v1"))]
    assert audit_actions("/api/runs/run1/audit") == ["artifact.recorded"]


def test_out_of_order_deliveries_leave_the_newest_upload_current(azure_app: AzureApp) -> None:
    azure_app.upload(KEY, b"first upload")
    older = blob_created(azure_app.service, azure_app.uploads, KEY)
    azure_app.host.deliver(older)
    azure_app.upload(KEY, b"second upload, likely in the same second")
    newer = blob_created(azure_app.service, azure_app.uploads, KEY)
    assert newer.get_json()["eTag"] != older.get_json()["eTag"]
    azure_app.host.deliver(newer)
    azure_app.host.deliver(older)  # Event Grid redelivers the older event late
    [current] = body_of(http("GET", "/api/runs/run1/artifacts"))["items"]
    assert current["etag"].strip('"') == newer.get_json()["eTag"]
    assert current["size"] == len(b"second upload, likely in the same second")
    assert audit_actions("/api/runs/run1/audit").count("artifact.recorded") == 2


@pytest.mark.parametrize("key", ["loose-file.bin", "exp1/run1/bad\\name.bin", "exp1/bad id/model.bin"])
def test_a_blob_outside_the_layout_is_reported_not_retried(azure_app: AzureApp, key: str) -> None:
    azure_app.upload(key, b"x")
    azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, key))
    assert (azure_app.host.invocations, azure_app.host.poison) == (1, [])
    [rejection] = body_of(http("GET", "/api/rejections"))["items"]
    assert rejection["key"] == key and rejection["reason"]


def test_awkward_names_are_recorded_exactly(azure_app: AzureApp) -> None:
    key = "exp1/run1/dir/hash#and?query + plus%2B ñame.bin"
    artifact = recorded(azure_app, key, b"awkward")
    assert artifact["name"] == "dir/hash#and?query + plus%2B ñame.bin"
    response = http("GET", f"/api/artifacts/{quote(artifact['runArtifactId'])}")
    assert body_of(response)["key"] == key


def test_a_failing_event_ends_in_the_poison_queue_after_bounded_attempts(azure_app: AzureApp) -> None:
    azure_app.upload(KEY, b"weights")
    event = blob_created(azure_app.service, azure_app.uploads, KEY)
    azure_app.tables.delete_table(azure_app.table)  # the metadata store is gone: every attempt fails
    azure_app.host.deliver(event)
    assert azure_app.host.invocations == POISON_THRESHOLD
    assert azure_app.host.poison == [event]
    assert all(isinstance(error, StorageError) for error in azure_app.host.failures)

    azure_app.tables.create_table(azure_app.table)  # back again: the next events flow
    azure_app.upload("exp1/run2/other.bin", b"other")
    azure_app.host.deliver(blob_created(azure_app.service, azure_app.uploads, "exp1/run2/other.bin"))
    assert azure_app.host.poison == [event]
    assert len(body_of(http("GET", "/api/runs/run2/artifacts"))["items"]) == 1


def test_without_blob_properties_the_current_version_is_recorded(azure_app: AzureApp) -> None:
    azure_app.host.with_properties = False
    artifact = recorded(azure_app, KEY, b"weights")
    head = azure_app.service.get_blob_client(azure_app.uploads, KEY).get_blob_properties()
    assert (artifact["etag"], artifact["size"]) == (head.etag, head.size)


def test_32_concurrent_register_calls_get_versions_1_to_32(azure_app: AzureApp) -> None:
    artifact = recorded(azure_app, KEY, b"model bytes")
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "ci"}
    responses: list[Any] = []
    lock = threading.Lock()
    start = threading.Barrier(32)

    def register(n: int) -> None:
        start.wait()
        response = http("POST", "/api/register", body={**body, "description": f"call {n}"})
        with lock:
            responses.append(response)

    began = time.perf_counter()
    threads = [threading.Thread(target=register, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    assert [r.status_code for r in responses] == [201] * 32, [body_of(r) for r in responses if r.status_code != 201]
    assert sorted(body_of(r)["version"] for r in responses) == list(range(1, 33))
    listed = body_of(http("GET", "/api/experiments/exp1/models", params={"limit": "100"}))["items"]
    assert [m["version"] for m in listed] == list(range(32, 0, -1))
    assert len({m["description"] for m in listed}) == 32
    print(f"\n32 concurrent registrations on Azurite: {elapsed:.2f} s")


def test_download_redirects_to_a_time_limited_sas_link(azure_app: AzureApp) -> None:
    artifact = recorded(azure_app, "exp1/run1/dir/weights file.bin", b"pinned bytes")
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "ci"}
    assert http("POST", "/api/register", body=body).status_code == 201
    azure_app.upload("exp1/run1/dir/weights file.bin", b"overwritten afterwards")
    response = http("GET", "/api/experiments/exp1/models/1/download")
    assert response.status_code == 307
    link = response.headers["Location"]
    assert "se=" in link and "sig=" in link and f"/{azure_app.registry}/sha256/" in link
    with urllib.request.urlopen(link) as download:
        assert download.read() == b"pinned bytes"
        assert download.headers["Content-Disposition"] == "attachment; filename*=UTF-8''weights%20file.bin"


def _register(body: Any, **headers: str) -> Any:
    return http("POST", "/api/register", body=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"", {"Content-Type": "application/json"}, 400, "needs a JSON body"),
        ([1, 2], {}, 400, "must be a JSON object"),
        ({"experimentId": "exp1"}, {}, 400, "registeredBy"),
        ({"experimentId": "exp1", "registeredBy": "ci"}, {}, 400, "runArtifactId"),
        ({"experimentId": "../x", "runArtifactId": "run1~aaaa", "registeredBy": "ci"}, {}, 400, "experimentId"),
        ({"experimentId": "exp1", "runArtifactId": "nope", "registeredBy": "ci"}, {}, 400, "malformed"),
        ({"experimentId": "exp1", "runArtifactId": "run1~" + "a" * 26, "registeredBy": "ci"}, {}, 404, "not recorded"),
        (b"experimentId=exp1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        (b"{" + b" " * 300_000 + b"}", {"Content-Type": "application/json"}, 413, "larger than"),
    ],
)
def test_bad_register_bodies_get_clear_problem_answers(
    azure_app: AzureApp, body: Any, headers: dict[str, str], status: int, says: str
) -> None:
    response = _register(body, **headers)
    assert response.status_code == status
    assert says in problem_of(response)["detail"]
    assert body_of(http("GET", "/api/experiments/exp1/models"))["items"] == []


def test_wrong_routes_and_methods_get_problem_answers(azure_app: AzureApp) -> None:
    assert problem_of(http("GET", "/api/nothing/here"))["status"] == 404
    wrong_method = http("DELETE", "/api/register")
    assert problem_of(wrong_method)["status"] == 405 and wrong_method.headers["Allow"] == "POST"
    assert problem_of(http("GET", "/api/experiments/exp1/models/0"))["status"] == 400
    assert problem_of(http("GET", "/api/experiments/exp1/models/latest"))["status"] == 404
