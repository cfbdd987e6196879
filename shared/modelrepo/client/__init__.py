"""`modelrepo.Client`: one typed client for every host (local, AWS, Azure).

    from modelrepo import Client

    with Client.from_profile("aws") as repo:            # a profile written by `modelrepo configure`
        model = repo.register("churn", run_artifact_id, "alice")
        with repo.download("churn", model.version) as download, open("model.onnx", "wb") as out:
            for chunk in download:                       # verified against the API's sha256
                out.write(chunk)

Importing this package needs no HTTP library; `Client.over_http` and the auth classes load httpx
(and the AWS or Azure SDK for SigV4 or Entra) when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelrepo.client._client import Client, Download, InProcessTransport, Reply, Transport, api_path
from modelrepo.client.errors import (
    ApiError,
    BadRequest,
    BusyError,
    ClientError,
    ConflictError,
    DigestMismatch,
    NotAuthorized,
    NotConfigured,
    NotFoundError,
    NotRecorded,
    UnprocessableError,
    Unreachable,
)

if TYPE_CHECKING:
    from modelrepo.client.auth import BearerAuth, EntraAuth, FunctionKeyAuth
    from modelrepo.client.http import HttpTransport

__all__ = [
    "ApiError",
    "BadRequest",
    "BearerAuth",
    "BusyError",
    "Client",
    "ClientError",
    "ConflictError",
    "DigestMismatch",
    "Download",
    "EntraAuth",
    "FunctionKeyAuth",
    "HttpTransport",
    "InProcessTransport",
    "NotAuthorized",
    "NotConfigured",
    "NotFoundError",
    "NotRecorded",
    "Reply",
    "Transport",
    "UnprocessableError",
    "Unreachable",
    "api_path",
]

_LAZY = {
    "BearerAuth": "modelrepo.client.auth",
    "EntraAuth": "modelrepo.client.auth",
    "FunctionKeyAuth": "modelrepo.client.auth",
    "HttpTransport": "modelrepo.client.http",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
