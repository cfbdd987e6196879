"""Auth on AWS: API Gateway's IAM check in front of the API function, the public API document,
and download links that expire.

API Gateway cannot run here, so `through_api_gateway` applies what the deployed API would: the
authorisers of the matching resource and method, read from the CloudFormation the SAM transform
makes of template.yaml. A route the template left without AWS_IAM would reach the function, and
the write it makes would fail these tests.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

import pytest

from modelrepo.api import ROUTES
from modelrepo.openapi import openapi_document
from tests.aws.cfn import PUBLIC_PATHS, api_security, load_template, translate
from tests.aws.conftest import EventSourceMapping, Stack, api_event, call_api
from tests.aws.test_api_function import recorded_artifact
from tests.aws.test_recovery import table_documents
from tests.fixtures.aws import aws_client

MISSING_TOKEN = (
    403,
    {"x-amzn-ErrorType": "MissingAuthenticationTokenException"},
    {"message": "Missing Authentication Token"},
)
MAX_LINK_SECONDS = 15 * 60


@pytest.fixture(scope="module")
def cloudformation(aws_environment: dict[str, str]) -> dict[str, Any]:
    return translate(load_template())


def through_api_gateway(cloudformation: dict[str, Any], event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """API Gateway's decision, then (only if it lets the request through) the function."""
    security = api_security(cloudformation, event["httpMethod"], event["path"])
    signed = any(name.lower() == "authorization" for name in event["headers"])
    if security is None or ("AWS_IAM" in security and not signed):
        return MISSING_TOKEN
    return call_api(event)


def unsigned(event: dict[str, Any]) -> dict[str, Any]:
    event["requestContext"]["identity"] = {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"}
    return event


def signed(event: dict[str, Any]) -> dict[str, Any]:
    """A request as a SigV4 signer sends it (API Gateway, not the function, verifies the signature)."""
    event["headers"]["Authorization"] = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-east-1/execute-api/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
    )
    return event


def registry_objects(stack: Stack) -> list[str]:
    listing = aws_client("s3", stack.endpoint).list_objects_v2(Bucket=stack.registry_bucket)
    return [entry["Key"] for entry in listing.get("Contents", [])]


def test_a_request_without_credentials_writes_nothing(
    stack: Stack, trigger: EventSourceMapping, cloudformation: dict[str, Any]
) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    valid_bodies = {
        "/api/register": {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": "mallory"},
        "/api/experiments/{experimentId}/deployments": {"version": 1, "target": "production", "deployedBy": "m"},
        "/api/experiments/{experimentId}/deployments/{target}/rollback": {"deployedBy": "m"},
        "/api/experiments/{experimentId}/models/{version}/tags/{key}": {"value": "v", "by": "m"},
        "/api/experiments/{experimentId}": {"description": "mine now", "by": "m"},
        "/api/experiments/{experimentId}/tags/{key}": {"value": "v", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}": {"description": "mine now", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}/approval": {"status": "approved", "by": "m"},
        "/api/experiments/{experimentId}/models/{version}/archive": {"by": "m"},
        "/api/experiments/{experimentId}/models/{version}/restore": {"by": "m"},
        "/api/experiments/{experimentId}/targets/{target}": {"requireApproval": True, "by": "m"},
    }
    mutating = [r for r in ROUTES if r.method in ("POST", "PUT", "DELETE", "PATCH")]
    # Each one is tried with a body that would succeed with credentials: no route is left out.
    assert {r.template for r in mutating if r.body is not None} <= set(valid_bodies)
    requests = []
    for route in mutating:
        path = (
            route.template.replace("{experimentId}", "exp1")
            .replace("{version}", "1")
            .replace("{target}", "production")
            .replace("{key}", "stage")
        )
        query = {"by": "mallory"} if route.method == "DELETE" else None
        requests.append((route.method, path, valid_bodies.get(route.template), query))
    before, pinned = table_documents(stack), registry_objects(stack)

    for method, path, body, query in requests:
        answer = through_api_gateway(cloudformation, unsigned(api_event(method, path, body=body, query=query)))
        assert answer == MISSING_TOKEN, (method, path, answer)
    assert table_documents(stack) == before, "nothing was written"
    assert registry_objects(stack) == pinned == []

    # The same requests, signed, reach the function and write: the check above can fail.
    method, path, body, query = requests[0]
    assert (method, path) == ("POST", "/api/register")
    status, _, model = through_api_gateway(cloudformation, signed(api_event(method, path, body=body, query=query)))
    assert (status, model["version"]) == (201, 1)
    assert table_documents(stack) != before and len(registry_objects(stack)) == 1


def test_health_and_the_api_document_are_public(stack: Stack, cloudformation: dict[str, Any]) -> None:
    for path in PUBLIC_PATHS:
        status, headers, _ = through_api_gateway(cloudformation, unsigned(api_event("GET", path)))
        assert (status, headers["Content-Type"]) == (200, "application/json"), path
    status, _, document = through_api_gateway(cloudformation, unsigned(api_event("GET", "/api/openapi.json")))
    assert document == openapi_document()
    assert document["openapi"].startswith("3.1")
    assert "/api/register" in document["paths"]
    assert through_api_gateway(cloudformation, unsigned(api_event("POST", "/api/openapi.json"))) == MISSING_TOKEN
    assert through_api_gateway(cloudformation, unsigned(api_event("GET", "/api/rejections"))) == MISSING_TOKEN


def test_download_links_are_presigned_and_expire_within_15_minutes(stack: Stack, trigger: EventSourceMapping) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": "alice"}
    assert call_api(api_event("POST", "/api/register", body=body))[0] == 201

    asked = datetime.now(UTC).replace(microsecond=0)  # X-Amz-Date counts whole seconds
    status, headers, _ = call_api(api_event("GET", "/api/experiments/exp1/models/1/download"))
    answered = datetime.now(UTC)

    assert status == 307 and headers["Cache-Control"] == "no-store"
    link = urllib.parse.urlsplit(headers["Location"])
    query = dict(urllib.parse.parse_qsl(link.query))
    assert link.path.endswith("/sha256/" + headers["ETag"].strip('"'))
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and query["X-Amz-Signature"]
    assert 0 < int(query["X-Amz-Expires"]) <= MAX_LINK_SECONDS
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert asked <= signed_at <= answered, "the link's validity starts when it is issued"
