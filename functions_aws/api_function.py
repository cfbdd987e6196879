"""The HTTP API behind API Gateway (REST, IAM auth): routes and JSON come from `modelrepo.api`.

Every request, whatever its path, is converted to `modelrepo.api.Request`, answered by the core's
`Api` (which routes it, so API Gateway, the local server and Azure serve the same paths and the
same 404/405 answers), and converted back to a REST proxy response. No Powertools event-handler
resolver or event data class sits in between: the resolver would only route everything to the
same call, and importing either package is the largest part of this function's cold start beyond
the SDK and the core (bench/README.md, cold start).
Neither bodies nor headers (which carry SigV4 signatures) are logged.
"""

from __future__ import annotations

import base64
from typing import Any

import aws_bootstrap
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo import api as core_api

logger = Logger()
metrics = Metrics()

# API Gateway answers at most 10 MB, and Lambda 6 MB; S3 stores answer downloads with a redirect.
MAX_INLINE_BODY = 5 * 1024 * 1024
TEXT_TYPES = ("application/json", core_api.PROBLEM_JSON, "text/")
STATUS_METRICS = {409: "Conflicts", 503: "Busy"}


def to_request(event: dict[str, Any]) -> core_api.Request:
    """The REST proxy event (API Gateway's documented format) as the core's request."""
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    return core_api.Request(
        method=event["httpMethod"],
        path=event["path"],
        query=dict(event.get("queryStringParameters") or {}),
        headers={name.lower(): value for name, value in (event.get("headers") or {}).items()},
        body=raw,
        principal=principal_of(event),
        base_url=base_url_of(event),
    )


def base_url_of(event: dict[str, Any]) -> str | None:
    """Where the client reached the API: scheme and host, and the stage (or base path mapping)
    that API Gateway strips from `path` but keeps in `requestContext.path`."""
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    host = headers.get("host")
    if not host:
        return None
    proto = str(headers.get("x-forwarded-proto", "http")).split(",")[0].strip()
    scheme = "https" if proto == "https" else "http"
    path = str(event.get("path") or "")
    full = str((event.get("requestContext") or {}).get("path") or "")
    prefix = full[: -len(path)] if path and full.endswith(path) else ""
    return f"{scheme}://{host}{prefix}"


def principal_of(event: dict[str, Any]) -> str | None:
    """The caller's IAM identity, as API Gateway's IAM authorizer verified it (its ARN)."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    arn = identity.get("userArn")
    return str(arn) if arn else None


def to_response(answer: core_api.Response) -> dict[str, Any]:
    body: bytes = answer.body
    if answer.stream is not None:
        try:
            body = b""
            for chunk in answer.stream:
                body += chunk
                if len(body) > MAX_INLINE_BODY:
                    return _proxy(core_api.problem(502, "the body is too large to return through API Gateway"))
        finally:
            answer.stream.close()
    return _proxy(core_api.Response(answer.status, answer.headers, body))


def _proxy(answer: core_api.Response) -> dict[str, Any]:
    """The REST proxy integration's answer; API Gateway decodes a base64 body back to bytes."""
    content_type = answer.headers.get("Content-Type", "")
    text = not answer.body or content_type.startswith(TEXT_TYPES)  # a redirect's empty body stays plain
    return {
        "statusCode": answer.status,
        "multiValueHeaders": {name: [value] for name, value in answer.headers.items()},
        "body": answer.body.decode("utf-8") if text else base64.b64encode(answer.body).decode("ascii"),
        "isBase64Encoded": not text,
    }


def forward(event: dict[str, Any]) -> dict[str, Any]:
    """Every request; the core answers unknown paths (404) and methods (405) itself."""
    request = to_request(event)
    answer = aws_bootstrap.api().handle(request)
    if answer.status == 201 and request.path == "/api/register":
        metrics.add_metric(name="Registrations", unit=MetricUnit.Count, value=1)
    if name := STATUS_METRICS.get(answer.status):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if retries := aws_bootstrap.retries.take():
        metrics.add_metric(name="Retries", unit=MetricUnit.Count, value=retries)
    logger.info("request answered", method=request.method, path=request.path, status=answer.status)
    return to_response(answer)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    logger.append_keys(caller=identity.get("userArn") or identity.get("caller"))
    return forward(event)
