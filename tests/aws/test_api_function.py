"""The API function end to end on the moto server: the core's routes through API Gateway events."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import urllib.parse
from typing import Any

import requests

from tests.aws import lambda_worker
from tests.aws.conftest import EventSourceMapping, Stack, api_event, call_api, load_event

WEIGHTS = b"WEIGHTS-MARKER-9f1c2e " * 512


def recorded_artifact(stack: Stack, trigger: EventSourceMapping, key: str = "exp1/run1/model.onnx") -> str:
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=WEIGHTS)
    trigger.drain()
    status, _, body = call_api(api_event("GET", f"/api/runs/{key.split('/')[1]}/artifacts"))
    assert status == 200, body
    run_artifact_id: str = body["items"][0]["runArtifactId"]
    return run_artifact_id


def register_event(run_artifact_id: str, who: str = "alice") -> dict[str, Any]:
    event = load_event("apigateway-register.json")
    event["body"] = json.dumps({"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": who})
    del event["headers"]["Idempotency-Key"], event["multiValueHeaders"]["Idempotency-Key"]
    return event


def test_32_concurrent_registrations_get_versions_1_to_32(stack: Stack, trigger: EventSourceMapping) -> None:
    """32 Lambda containers (processes) register the same experiment at the same moment."""
    run_artifact_id = recorded_artifact(stack, trigger)
    context = multiprocessing.get_context("forkserver")
    # Import once in the fork server, then fork a container per call.
    context.set_forkserver_preload(["tests.aws.lambda_worker"])
    barrier, results = context.Barrier(32), context.Queue()
    workers = [
        context.Process(
            target=lambda_worker.invoke_api,
            args=(stack.environment, register_event(run_artifact_id, f"user{n}"), barrier, results),
        )
        for n in range(32)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)

    assert [a.get("error") for a in answers] == [None] * 32
    assert [a["statusCode"] for a in answers] == [201] * 32
    bodies = [json.loads(a["body"]) for a in answers]
    assert sorted(b["version"] for b in bodies) == list(range(1, 33))
    assert sorted(b["registeredBy"] for b in bodies) == sorted(f"user{n}" for n in range(32))

    status, _, page = call_api(api_event("GET", "/api/experiments/exp1/models", query={"limit": "100"}))
    assert status == 200
    assert [m["version"] for m in page["items"]] == list(range(32, 0, -1))
    status, _, audit = call_api(api_event("GET", "/api/experiments/exp1/audit", query={"limit": "100"}))
    assert sum(e["action"] == "model.registered" for e in audit["items"]) == 32


def test_the_sample_events_are_served_like_the_local_runtime(stack: Stack, trigger: EventSourceMapping) -> None:
    status, _, body = call_api(load_event("apigateway-health.json"))
    assert (status, body) == (200, {"status": "ok"})

    run_artifact_id = recorded_artifact(stack, trigger)
    event = load_event("apigateway-register.json")  # carries an Idempotency-Key
    event["body"] = json.dumps({**json.loads(event["body"]), "runArtifactId": run_artifact_id})
    status, headers, first = call_api(event)
    assert status == 201, first
    assert (first["version"], first["sha256"]) == (1, hashlib.sha256(WEIGHTS).hexdigest())
    assert headers["Location"] == "/api/experiments/exp1/models/1"
    status, _, again = call_api(event)  # the same Idempotency-Key: the same version, no new row
    assert (status, again["version"]) == (201, 1)
    assert call_api(api_event("GET", "/api/experiments/exp1/models/latest"))[2]["version"] == 1

    status, headers, body = call_api(api_event("GET", "/api/experiments/exp1/models/1/download"))
    assert (status, body) == (307, "")
    assert headers["ETag"] == f'"{first["sha256"]}"'
    link = headers["Location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
    assert "X-Amz-Expires" in query and "X-Amz-Signature" in query
    download = requests.get(link, timeout=10)
    assert download.content == WEIGHTS
    assert "model.onnx" in download.headers["Content-Disposition"]


def test_mistakes_get_problem_answers_and_write_nothing(stack: Stack, trigger: EventSourceMapping) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    cases: list[tuple[dict[str, Any], int]] = [
        (api_event("POST", "/api/register", body="{not json"), 400),
        (api_event("POST", "/api/register", body={"experimentId": "exp1"}), 400),
        (
            api_event(
                "POST",
                "/api/register",
                body={"experimentId": "exp 1", "runArtifactId": run_artifact_id, "registeredBy": "a"},
            ),
            400,
        ),
        (
            api_event(
                "POST",
                "/api/register",
                body={"experimentId": "exp2", "runArtifactId": run_artifact_id, "registeredBy": "a"},
            ),
            422,
        ),
        (
            api_event(
                "POST",
                "/api/register",
                body={"experimentId": "exp1", "runArtifactId": "run1~aaaaaaaaaaaaaaaaaaaaaaaaaa", "registeredBy": "a"},
            ),
            404,
        ),
        (api_event("GET", "/api/experiments/exp1/models/0"), 400),
        (api_event("GET", "/api/experiments/exp1/models/latest"), 404),
        (api_event("GET", "/api/nowhere"), 404),
        (api_event("DELETE", "/api/register"), 405),
        (api_event("POST", "/api/register", body="x" * 300_000), 413),
    ]
    for event, expected in cases:
        status, headers, body = call_api(event)
        assert status == expected, (event["httpMethod"], event["path"], body)
        assert headers["Content-Type"] == "application/problem+json"
        assert body["status"] == expected and body["detail"]
    assert call_api(api_event("DELETE", "/api/register"))[1]["Allow"] == "POST"
    status, _, page = call_api(api_event("GET", "/api/experiments/exp1/models"))
    assert (status, page["items"]) == (200, [])


def test_logs_hold_no_object_contents_or_secrets(
    stack: Stack, trigger: EventSourceMapping, function_logs: Any, monkeypatch: Any
) -> None:
    secret = "modelrepo-test-secret-access-key-ZX81"
    token = "modelrepo-test-session-token-QL42"
    signature = "0badc0ffee0badc0ffee0badc0ffee0badc0ffee0badc0ffee0badc0ffee0bad"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    run_artifact_id = recorded_artifact(stack, trigger)
    event = register_event(run_artifact_id)
    event["headers"]["Authorization"] = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-east-1/execute-api/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}"
    )
    event["headers"]["X-Amz-Security-Token"] = token
    assert call_api(event)[0] == 201
    assert call_api(api_event("GET", "/api/experiments/exp1/models/1/download"))[0] == 307
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{poison")
    trigger.drain()

    logs = function_logs.getvalue()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "upload handled" for line in lines), "the record function logs"
    assert any(line.get("correlation_id") == event["requestContext"]["requestId"] for line in lines)
    assert any(line.get("caller") == "arn:aws:iam::123456789012:user/alice" for line in lines)
    for forbidden in ("WEIGHTS-MARKER", secret, token, signature, "AKIAIOSFODNN7EXAMPLE", "X-Amz-Signature"):
        assert forbidden not in logs
