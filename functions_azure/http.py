"""HTTP functions: every route of `modelrepo.api` under /api, behind a function key.

One catch-all function hands each request to `Api.handle`, so the routes, schemas, status codes
and problem answers are exactly those of the local runtime; nothing is redefined here. Health is
a second, anonymous function on the same code path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import azure.functions as func

from functions_azure.bootstrap import runtime
from modelrepo.api import Request, Response

blueprint = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
# The function key travels as `?code=`; it is the host's business, not a query parameter of ours.
HOST_PARAMETERS = frozenset({"code"})


def to_request(request: func.HttpRequest) -> Request:
    return Request(
        method=request.method,
        path=urlsplit(request.url).path,  # still percent-encoded, as the API expects
        query={k: v for k, v in request.params.items() if k not in HOST_PARAMETERS},
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_body() or b"",
    )


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


@blueprint.function_name("api")
@blueprint.route(route="{*path}", methods=list(METHODS), auth_level=func.AuthLevel.FUNCTION)
def api(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req)
