"""HTTP functions: every route of `modelrepo.api` under /api, behind a function key.

One catch-all function hands each request to `Api.handle`, so the routes, schemas, status codes
and problem answers are exactly those of the local runtime; nothing is redefined here. Two
read-only routes are anonymous functions on the same code path: health (for monitors) and the
OpenAPI document (it describes the API's shape and holds no data; clients and code generators
fetch it before they have a key; the document itself marks both as needing no credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import azure.functions as func

from functions_azure.bootstrap import runtime

if TYPE_CHECKING:
    from modelrepo.api import Request, Response

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
# The function key travels as `?code=` or `x-functions-key`; it is the host's business, so it never
# reaches the API (or its logs).
HOST_PARAMETERS = frozenset({"code"})
HOST_HEADERS = frozenset({"x-functions-key"})


def to_request(request: func.HttpRequest) -> Request:
    from modelrepo.api import Request  # loaded with the first request (`AzureRuntime.api`)

    return Request(
        method=request.method,
        path=urlsplit(request.url).path,  # still percent-encoded, as the API expects
        query={k: v for k, v in request.params.items() if k not in HOST_PARAMETERS},
        headers={k.lower(): v for k, v in request.headers.items() if k.lower() not in HOST_HEADERS},
        body=request.get_body() or b"",
        principal=principal_of(request),
    )


def principal_of(request: func.HttpRequest) -> str | None:
    """Who App Service authentication signed in (it sets this header and strips a client's own).

    A function key names no one: the Functions host checks it but does not tell the function which
    key it was, so requests authenticated by a key alone carry no principal."""
    return request.headers.get("x-ms-client-principal-name") or None


def to_response(response: Response) -> func.HttpResponse:
    body = response.body
    if response.stream is not None:
        # Not reached with AzureBlobArtifactStore (downloads are 307 redirects to a SAS link), but
        # a store without links must still answer correctly.
        try:
            body = b"".join(response.stream)
        finally:
            response.stream.close()
    return func.HttpResponse(
        body,
        status_code=response.status,
        headers=response.headers,
        mimetype=response.headers.get("Content-Type"),
    )


def serve(request: func.HttpRequest) -> func.HttpResponse:
    return to_response(runtime().api.handle(to_request(request)))


@blueprint.function_name("health")
@blueprint.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req)


@blueprint.function_name("openapi")
@blueprint.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req)


@blueprint.function_name("ui")
@blueprint.route(route="ui/{*asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def ui(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req)


@blueprint.function_name("api")
@blueprint.route(route="{*path}", methods=list(METHODS), auth_level=func.AuthLevel.FUNCTION)
def api(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req)
