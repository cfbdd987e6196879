"""MLflow's registry API on the core's fakes (no MLflow needed): the error format and codes, the
create's idempotency window, what is checked before anything is written, filters and pages, the
artifact listing, principals and the download URI."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrepo import tables
from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.api import Api, Request
from modelrepo.errors import Busy, Throttled
from modelrepo.mlflow_api import CREATE_WINDOW, MlflowApi
from modelrepo.openapi import openapi_document
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository

MODEL_FILES = {"MLmodel": b"flavors: {}\n", "weights/w.bin": b"w" * 100, "weights/b.bin": b"b" * 10}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Mlflow:
    """An MLflow client's requests, straight into `Api.handle`."""

    def __init__(self, *, actor_must_be_principal: bool = False) -> None:
        self.clock = Clock()
        retry = RetryPolicy(base_seconds=0.0005, cap_seconds=0.005, deadline_seconds=20)
        self.repository = ModelRepository(MemoryArtifactStore(), MemoryMetadataStore(), retry=retry, now=self.clock)
        self.api = Api(self.repository, actor_must_be_principal=actor_must_be_principal)

    def drop(self, prefix: str, files: dict[str, bytes] = MODEL_FILES) -> str:
        for path, data in files.items():
            self.repository.artifacts.put(f"{prefix}/{path}", io.BytesIO(data))
        return f"memory:///{prefix}"

    def call(
        self,
        method: str,
        endpoint: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        principal: str | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        path = endpoint if endpoint.startswith("/") else f"/api/2.0/mlflow/{endpoint}"
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        sent = {"content-type": "application/json", "host": "registry.example:7071", **(headers or {})}
        response = self.api.handle(Request(method, path, query or {}, sent, payload, principal=principal))
        if response.stream is not None:
            data = b"".join(response.stream)
            response.stream.close()
            return response.status, data
        return response.status, json.loads(response.body) if response.body else None

    def ok(self, method: str, endpoint: str, body: Any = None, **options: Any) -> Any:
        status, answer = self.call(method, endpoint, body, **options)
        assert status == 200, answer
        return answer

    def create(self, source: str, **fields: Any) -> str:
        answer = self.ok("POST", "model-versions/create", {"name": "churn", "source": source, **fields})
        version: str = answer["model_version"]["version"]
        return version


@pytest.fixture
def mlflow() -> Mlflow:
    client = Mlflow()
    client.ok("POST", "registered-models/create", {"name": "churn"})
    return client


def error_of(answer: tuple[int, Any]) -> tuple[int, str]:
    status, body = answer
    assert set(body) == {"error_code", "message"} and body["message"], body
    return status, body["error_code"]


def test_errors_answer_in_mlflow_s_format_with_its_codes(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")
    mlflow.create(source)
    cases = {
        "bad name": mlflow.call("POST", "registered-models/create", {"name": "not valid"}),
        "exists": mlflow.call("POST", "registered-models/create", {"name": "churn"}),
        "no model": mlflow.call("GET", "registered-models/get", query={"name": "nothing"}),
        "no version": mlflow.call("GET", "model-versions/get", query={"name": "churn", "version": "9"}),
        "bad version": mlflow.call("GET", "model-versions/get", query={"name": "churn", "version": "one"}),
        "bad alias": mlflow.call("POST", "registered-models/alias", {"name": "churn", "alias": "Prod!", "version": 1}),
        "no alias": mlflow.call("GET", "registered-models/alias", query={"name": "churn", "alias": "champion"}),
        "not json": mlflow.call("POST", "registered-models/create", raw=b"{name"),
        "not an object": mlflow.call("POST", "registered-models/create", raw=b"[1]"),
        "too large": mlflow.call("POST", "registered-models/create", raw=b" " * (300 * 1024)),
        "no endpoint": mlflow.call("GET", "experiments/get-by-name", query={"experiment_name": "x"}),
        "wrong method": mlflow.call("GET", "model-versions/create"),
        "rename": mlflow.call("POST", "registered-models/rename", {"name": "churn", "new_name": "c2"}),
        "stages": mlflow.call("POST", "model-versions/transition-stage", {"name": "churn", "version": "1"}),
        "write artifacts": mlflow.call("PUT", "/api/2.0/mlflow-artifacts/artifacts/churn/1/x", raw=b"x"),
    }
    assert {case: error_of(answer) for case, answer in cases.items()} == {
        "bad name": (400, "INVALID_PARAMETER_VALUE"),
        "exists": (400, "RESOURCE_ALREADY_EXISTS"),
        "no model": (404, "RESOURCE_DOES_NOT_EXIST"),
        "no version": (404, "RESOURCE_DOES_NOT_EXIST"),
        "bad version": (400, "INVALID_PARAMETER_VALUE"),
        "bad alias": (400, "INVALID_PARAMETER_VALUE"),
        "no alias": (404, "RESOURCE_DOES_NOT_EXIST"),
        "not json": (400, "INVALID_PARAMETER_VALUE"),
        "not an object": (400, "INVALID_PARAMETER_VALUE"),
        "too large": (400, "INVALID_PARAMETER_VALUE"),
        "no endpoint": (404, "ENDPOINT_NOT_FOUND"),
        "wrong method": (404, "ENDPOINT_NOT_FOUND"),
        "rename": (501, "NOT_IMPLEMENTED"),
        "stages": (501, "NOT_IMPLEMENTED"),
        "write artifacts": (501, "NOT_IMPLEMENTED"),
    }
    # The rules are named in the message.
    assert "1-128 letters, digits" in cases["bad name"][1]["message"]
    assert "deployment target" in cases["bad alias"][1]["message"]
    assert "use POST" in cases["wrong method"][1]["message"]
    # State conflicts: what an alias points at cannot be deleted; a gated target takes approved versions.
    mlflow.ok("POST", "registered-models/alias", {"name": "churn", "alias": "champion", "version": "1"})
    assert error_of(mlflow.call("DELETE", "model-versions/delete", {"name": "churn", "version": "1"})) == (
        409,
        "RESOURCE_CONFLICT",
    )
    mlflow.repository.set_target_policy("churn", "production", require_approval=True, by="lead")
    refused = mlflow.call("POST", "registered-models/alias", {"name": "churn", "alias": "production", "version": "1"})
    assert error_of(refused) == (400, "BAD_REQUEST") and "requireApproval" in refused[1]["message"]
    # Contention past the deadline and a throttling backend: retryable, with Retry-After.
    translate = MlflowApi(mlflow.api)._translate
    assert (translate(Busy("busy", 2.4)).code, translate(Busy("busy", 2.4)).headers) == (
        "TEMPORARILY_UNAVAILABLE",
        {"Retry-After": "2"},
    )
    assert translate(Throttled("slow down")).headers == {"Retry-After": "1"}


def test_sources_outside_the_model_s_own_experiment_are_refused_before_anything_is_written(mlflow: Mlflow) -> None:
    mlflow.drop("churn/run-1/model")
    mlflow.drop("other/run-1/model")
    mlflow.ok("POST", "registered-models/create", {"name": "other"})
    refusals: dict[str, dict[str, Any]] = {
        "outside": {"source": "s3://another-bucket/churn/run-1/model"},
        "another experiment": {"source": "memory:///other/run-1/model"},
        "no run": {"source": "memory:///churn"},
        "run mismatch": {"source": "memory:///churn/run-1/model", "run_id": "run-2"},
        "bad tag": {"source": "memory:///churn/run-1/model", "tags": [{"key": "bad key", "value": "x"}]},
        "dot segments": {"source": "memory:///churn/run-1/../run-1/model"},
    }
    for case, fields in refusals.items():
        answer = mlflow.call("POST", "model-versions/create", {"name": "churn", **fields})
        assert error_of(answer) == (400, "INVALID_PARAMETER_VALUE"), case
    nothing = mlflow.call("POST", "model-versions/create", {"name": "churn", "source": "memory:///churn/run-1/none"})
    assert error_of(nothing) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert mlflow.repository.get_experiment("churn").version_count == 0  # nothing registered, nothing half-done


def test_a_create_is_its_own_idempotency_key_within_its_window(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")
    assert [mlflow.create(source, description="a") for _ in range(3)] == ["1", "1", "1"]  # retries: one version
    assert mlflow.create(source, description="b") == "2"  # another request
    assert mlflow.create(source, description="a", tags=[{"key": "k", "value": "v"}]) == "3"
    mlflow.clock.now += CREATE_WINDOW - timedelta(seconds=1)
    assert mlflow.create(source, description="a") == "1"  # still the first one's retry
    mlflow.clock.now += timedelta(seconds=2)
    assert mlflow.create(source, description="a") == "4"  # the same request later: a new version
    mlflow.drop("churn/run-1/model", {**MODEL_FILES, "MLmodel": b"flavors: {retrained: true}\n"})
    assert mlflow.create(source, description="a") == "5"  # the source holds other bytes now
    single = mlflow.create(source + "/MLmodel")
    assert single == "6" and mlflow.create(source + "/MLmodel") == "6"  # one file: a single-file version
    files = mlflow.repository.manifest(mlflow.repository.get_model("churn", 6)).files
    assert [(f.path, f.size) for f in files] == [("MLmodel", len(b"flavors: {retrained: true}\n"))]


def test_objects_the_event_path_has_not_recorded_are_recorded_by_the_create(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")  # put into the bucket, no upload event handled
    assert mlflow.repository.list_run_artifacts("run-1") == []
    mlflow.create(source)
    assert sorted(a.name for a in mlflow.repository.list_run_artifacts("run-1")) == [
        "model/MLmodel",
        "model/weights/b.bin",
        "model/weights/w.bin",
    ]
    version = mlflow.repository.get_model("churn", 1)
    assert version.files == 3 and version.artifact_name == "model/"


def test_versions_search_by_name_tag_and_run_in_pages(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")
    for index in range(5):
        tags = [{"key": "stage", "value": "live" if index % 2 else "candidate"}]
        mlflow.create(source, description=str(index), tags=tags)
    seen: list[str] = []
    token: str | None = None
    while True:
        query = {"filter": "name = 'churn' AND tags.stage = 'candidate'", "max_results": "2"}
        answer = mlflow.ok("GET", "model-versions/search", query={**query, **({"page_token": token} if token else {})})
        seen += [v["version"] for v in answer["model_versions"]]
        token = answer.get("next_page_token")
        if not token:
            break
    assert seen == ["5", "3", "1"]  # newest first, across pages
    by_run = mlflow.ok("GET", "model-versions/search", query={"filter": "name='churn' and run_id='run-2'"})
    assert by_run["model_versions"] == []
    refused = {
        "operator": "name LIKE 'ch%'",
        "field": "source_path = 'x'",
        "syntax": "name = churn",
        "joined": "name = 'churn' OR run_id = 'r'",
        "nothing indexed": "run_id = 'run-1'",
    }
    for case, text in refused.items():
        assert error_of(mlflow.call("GET", "model-versions/search", query={"filter": text})) == (
            400,
            "INVALID_PARAMETER_VALUE",
        ), case
    order = mlflow.call("GET", "model-versions/search", query={"filter": "name='churn'", "order_by": "name ASC"})
    assert error_of(order) == (400, "INVALID_PARAMETER_VALUE")
    token_answer = mlflow.call("GET", "model-versions/search", query={"filter": "name='churn'", "page_token": "../x"})
    assert error_of(token_answer) == (400, "INVALID_PARAMETER_VALUE")


def test_registered_models_search_by_exact_name_or_prefix(mlflow: Mlflow) -> None:
    for name in ("churn-eu", "fraud"):
        mlflow.ok("POST", "registered-models/create", {"name": name})
    from modelrepo.projections import indexer_listener

    listener = indexer_listener(mlflow.repository.metadata)  # the index, kept in step as serve keeps it
    for name in ("churn", "churn-eu", "fraud"):
        listener(tables.experiment_partition(name))

    def names(text: str) -> list[str]:
        answer = mlflow.ok("GET", "registered-models/search", query={"filter": text})
        return [m["name"] for m in answer["registered_models"]]

    assert names("") == ["churn", "churn-eu", "fraud"]
    assert names("name LIKE 'churn%'") == ["churn", "churn-eu"]
    assert names("name = 'fraud'") == ["fraud"]
    assert names("name = 'nothing'") == []
    bad = mlflow.call("GET", "registered-models/search", query={"filter": "name LIKE '%urn'"})
    assert error_of(bad) == (400, "INVALID_PARAMETER_VALUE")


def test_tags_and_aliases_are_deleted_idempotently_as_in_mlflow(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")
    mlflow.create(source, tags=[{"key": "stage", "value": "live"}])
    for _ in range(2):
        mlflow.ok("DELETE", "model-versions/delete-tag", {"name": "churn", "version": "1", "key": "stage"})
        mlflow.ok("DELETE", "registered-models/delete-tag", {"name": "churn", "key": "team"})
        mlflow.ok("DELETE", "registered-models/alias", {"name": "churn", "alias": "champion"})
    assert mlflow.repository.get_model("churn", 1).tags == {}
    missing = mlflow.call("DELETE", "registered-models/alias", {"name": "nothing", "alias": "champion"})
    assert error_of(missing) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_a_version_s_artifacts_are_listed_as_a_tree_and_served_by_path(mlflow: Mlflow) -> None:
    source = mlflow.drop("churn/run-1/model")
    mlflow.create(source)
    listing = "/api/2.0/mlflow-artifacts/artifacts"
    root = mlflow.ok("GET", listing, query={"path": "churn/1"})
    assert root == {
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": len(MODEL_FILES["MLmodel"])},
            {"path": "weights", "is_dir": True},
        ]
    }
    assert [f["path"] for f in mlflow.ok("GET", listing, query={"path": "churn/1/weights"})["files"]] == [
        "weights/b.bin",
        "weights/w.bin",
    ]
    assert mlflow.ok("GET", listing, query={"path": "churn/1/MLmodel"}) == {}  # a file: nothing under it
    assert mlflow.call("GET", f"{listing}/churn/1/weights/w.bin") == (200, MODEL_FILES["weights/w.bin"])
    assert error_of(mlflow.call("GET", listing, query={"path": "churn/1/../2"})) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(mlflow.call("GET", f"{listing}/churn/1/nothing")) == (404, "RESOURCE_DOES_NOT_EXIST")
    mlflow.ok("DELETE", "model-versions/delete", {"name": "churn", "version": "1"})
    assert error_of(mlflow.call("GET", f"{listing}/churn/1/MLmodel")) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert error_of(mlflow.call("GET", listing, query={"path": "churn/1"})) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_the_download_uri_is_where_the_client_reached_the_api(mlflow: Mlflow) -> None:
    mlflow.create(mlflow.drop("churn/run-1/model"))
    query = {"name": "churn", "version": "1"}

    def uri(**options: Any) -> str:
        return str(mlflow.ok("GET", "model-versions/get-download-uri", query=query, **options)["artifact_uri"])

    assert uri() == "http://registry.example:7071/api/2.0/mlflow-artifacts/artifacts/churn/1"
    assert uri(headers={"x-forwarded-proto": "https"}).startswith("https://registry.example:7071/api/")
    staged = Request(
        "GET",
        "/api/2.0/mlflow/model-versions/get-download-uri",
        query,
        {"host": "abc.execute-api.eu-west-1.amazonaws.com"},
        base_url="https://abc.execute-api.eu-west-1.amazonaws.com/prod",
    )
    answer = json.loads(mlflow.api.handle(staged).body)
    assert (
        answer["artifact_uri"]
        == "https://abc.execute-api.eu-west-1.amazonaws.com/prod/api/2.0/mlflow-artifacts/artifacts/churn/1"
    )


def test_changes_name_the_authenticated_principal_and_may_require_one() -> None:
    strict = Mlflow(actor_must_be_principal=True)
    refused = strict.call("POST", "registered-models/create", {"name": "churn"})
    assert error_of(refused) == (403, "PERMISSION_DENIED")
    arn = "arn:aws:iam::123456789012:user/alice"
    strict.ok("POST", "registered-models/create", {"name": "churn"}, principal=arn)
    answer = strict.ok(
        "POST", "model-versions/create", {"name": "churn", "source": strict.drop("churn/run-1/m")}, principal=arn
    )
    assert answer["model_version"]["user_id"] == arn
    assert strict.ok("GET", "registered-models/get", query={"name": "churn"})["registered_model"]["name"] == "churn"


def test_mlflow_s_routes_stay_out_of_the_api_document() -> None:
    assert not [path for path in openapi_document()["paths"] if "/2.0/" in path]
