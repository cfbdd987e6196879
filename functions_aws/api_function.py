"""The HTTP API behind API Gateway (REST, IAM auth): routes and JSON come from `modelrepo.api`.

The resolver is given the core's route table, so API Gateway, the local server and Azure serve
the same paths; every request is converted to `modelrepo.api.Request`, answered by the core's
`Api`, and converted back. Neither bodies nor headers (which carry SigV4 signatures) are logged.
"""

from __future__ import annotations

import base64
from typing import Any

import aws_bootstrap
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo import api as core_api

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

# API Gateway answers at most 10 MB, and Lambda 6 MB; S3 stores answer downloads with a redirect.
MAX_INLINE_BODY = 5 * 1024 * 1024
TEXT_TYPES = ("application/json", core_api.PROBLEM_JSON, "text/")
STATUS_METRICS = {409: "Conflicts", 503: "Busy"}


def to_request(event: APIGatewayProxyEvent) -> core_api.Request:
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.is_base64_encoded else body.encode("utf-8")
    return core_api.Request(
        method=event.http_method,
        path=event.path,
        query=dict(event.query_string_parameters or {}),
        headers={name.lower(): value for name, value in (event.headers or {}).items()},
        body=raw,
        principal=principal_of(event),
        base_url=base_url_of(event),
    )


def base_url_of(event: APIGatewayProxyEvent) -> str | None:
    """Where the client reached the API: scheme and host, and the stage (or base path mapping)
    that API Gateway strips from `path` but keeps in `requestContext.path`."""
    headers = {name.lower(): value for name, value in (event.headers or {}).items()}
    host = headers.get("host")
    if not host:
        return None
    scheme = "https" if headers.get("x-forwarded-proto", "http").split(",")[0].strip() == "https" else "http"
    full = str((event.get("requestContext") or {}).get("path") or "")
    prefix = full[: -len(event.path)] if event.path and full.endswith(event.path) else ""
    return f"{scheme}://{host}{prefix}"


def principal_of(event: APIGatewayProxyEvent) -> str | None:
    """The caller's IAM identity, as API Gateway's IAM authorizer verified it (its ARN)."""
    identity = (event.get("requestContext") or {}).get("identity") or {}
    return identity.get("userArn") or None


def to_response(answer: core_api.Response) -> Response[Any]:
    body: bytes = answer.body
    if answer.stream is not None:
        try:
            body = b""
            for chunk in answer.stream:
                body += chunk
                if len(body) > MAX_INLINE_BODY:
                    return _as_response(core_api.problem(502, "the body is too large to return through API Gateway"))
        finally:
            answer.stream.close()
    return _as_response(core_api.Response(answer.status, answer.headers, body))


def _as_response(answer: core_api.Response) -> Response[Any]:
    content_type = answer.headers.get("Content-Type", "")
    text = not answer.body or content_type.startswith(TEXT_TYPES)  # a redirect's empty body stays plain
    return Response(
        status_code=answer.status,
        body=answer.body.decode("utf-8") if text else answer.body,
        headers=answer.headers,
    )


def forward(**_path_parameters: str) -> Response[Any]:
    """Every route, and every unmatched request (the core answers 404 or 405 itself)."""
    request = to_request(app.current_event)
    answer = aws_bootstrap.api().handle(request)
    if answer.status == 201 and request.path == "/api/register":
        metrics.add_metric(name="Registrations", unit=MetricUnit.Count, value=1)
    if name := STATUS_METRICS.get(answer.status):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if retries := aws_bootstrap.retries.take():
        metrics.add_metric(name="Retries", unit=MetricUnit.Count, value=retries)
    logger.info("request answered", method=request.method, path=request.path, status=answer.status)
    return to_response(answer)


for _route in core_api.ROUTES:
    app.route(_route.template.replace("{", "<").replace("}", ">"), method=_route.method)(forward)


@app.not_found
def unmatched(_error: NotFoundError) -> Response[Any]:
    return forward()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    identity = (event.get("requestContext") or {}).get("identity") or {}
    logger.append_keys(caller=identity.get("userArn") or identity.get("caller"))
    return app.resolve(event, context)
