"""MLflow request-auth plugins: an MLflow client authenticates to a deployed modelrepo.

MLflow loads these through its `mlflow.request_auth_provider` entry point (shared/pyproject.toml)
and uses the one `MLFLOW_TRACKING_AUTH` names for every request to the registry and to the
artifact URIs it hands out:

| `MLFLOW_TRACKING_AUTH` | host | sent |
|---|---|---|
| `modelrepo-sigv4` | API Gateway with IAM auth | SigV4 for `execute-api`, body signed |
| `modelrepo-function-key` | Azure Functions | `x-functions-key: $MODELREPO_FUNCTION_KEY` |

SigV4 takes its credentials from botocore's chain and the region from the URL, else AWS_REGION.

(`modelrepo serve` needs no plugin: MLflow sends `MLFLOW_TRACKING_TOKEN` as `Authorization: Bearer`.)

Each auth is a `requests` auth callable, the kind MLflow's registry expects. Neither imports
MLflow (the registry calls `get_name` and `get_auth` on whatever the entry point names), so they
load without it. A download the API redirects to another host (a presigned S3 link, a SAS link)
is fetched without any of the headers these add: requests drops only `Authorization` on such a
redirect, which would leave the function key and SigV4's session token going to the storage host
(and S3 refuses unsigned `x-amz-*` headers on a presigned request).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urljoin, urlsplit, urlunsplit

import requests

FUNCTION_KEY_VARIABLE = "MODELREPO_FUNCTION_KEY"
SERVICE = "execute-api"
EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def region_from_url(url: str) -> str | None:
    """The region of an `https://{id}.execute-api.{region}.amazonaws.com/...` URL."""
    found = EXECUTE_API_HOST.match((urlsplit(url).hostname or "").lower())
    return found.group(1) if found else None


class _AuthBase(requests.auth.AuthBase):
    """Adds headers for the API's own origin; a redirect elsewhere is followed bare."""

    def _sign(self, request: requests.PreparedRequest) -> None:
        raise NotImplementedError

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self._sign(request)
        request.register_hook("response", _bare_cross_origin_redirects)
        return request


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _bare_cross_origin_redirects(response: requests.Response, **settings: Any) -> requests.Response:
    """Follow a redirect to another origin here, with a fresh session that holds no credentials,
    so that requests' own redirect handling never copies this auth's headers there."""
    location = response.headers.get("location")
    if not response.is_redirect or not location or response.request is None:
        return response
    target = urljoin(response.url, location)
    if _origin(target) == _origin(response.url):
        return response
    response.close()
    with requests.Session() as bare:
        followed = bare.get(
            target,
            stream=bool(settings.get("stream")),
            timeout=settings.get("timeout"),
            verify=settings.get("verify", True),
            allow_redirects=True,
        )
    followed.history = [response, *followed.history]
    return followed


class FunctionKeyAuth(_AuthBase):
    """`x-functions-key: <key>`: a function key of the Azure Functions app (never `?code=`, which
    would reach access logs)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _sign(self, request: requests.PreparedRequest) -> None:
        request.headers["x-functions-key"] = self._key

    def __repr__(self) -> str:
        return "FunctionKeyAuth(key=**********)"


class SigV4Auth(_AuthBase):
    """SigV4 for API Gateway (service `execute-api`) with botocore's signer.

    The query is rewritten in RFC 3986 form first (requests writes a space as `+`, which AWS's
    canonical form does not read as a space), so the signature covers exactly what is sent.
    """

    def __init__(self, credentials: Any, region: str | None) -> None:  # botocore's Credentials
        self._credentials = credentials
        self._region = region

    def _sign(self, request: requests.PreparedRequest) -> None:
        from modelrepo.client.aws import sigv4_headers

        assert request.url is not None and request.method is not None
        request.url = _rfc3986_query(request.url)
        region = region_from_url(request.url) or self._region
        if not region:
            raise RuntimeError("cannot tell the API's AWS region: set AWS_REGION (or use an execute-api URL)")
        raw = request.body
        if raw is not None and not isinstance(raw, bytes | str):
            raise RuntimeError("modelrepo-sigv4 signs bodies sent whole, not streamed ones")
        body = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
        headers = {name: str(request.headers[name]) for name in ("Content-Type",) if name in request.headers}
        request.headers.update(sigv4_headers(self._credentials, region, request.method, request.url, body, headers))

    def __repr__(self) -> str:
        return f"SigV4Auth(service={SERVICE!r}, region={self._region!r})"


def _rfc3986_query(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}" for name, value in pairs)
    return urlunsplit(parts._replace(query=query))


class FunctionKeyProvider:
    """`MLFLOW_TRACKING_AUTH=modelrepo-function-key`, the key in MODELREPO_FUNCTION_KEY."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get_name(self) -> str:
        return "modelrepo-function-key"

    def get_auth(self) -> FunctionKeyAuth:
        key = self._environ.get(FUNCTION_KEY_VARIABLE, "").strip()
        if not key:
            raise RuntimeError(
                f"MLFLOW_TRACKING_AUTH=modelrepo-function-key needs the function key in {FUNCTION_KEY_VARIABLE} "
                "(az functionapp keys list -g GROUP -n APP)"
            )
        return FunctionKeyAuth(key)


class SigV4Provider:
    """`MLFLOW_TRACKING_AUTH=modelrepo-sigv4`: credentials from botocore's chain (AWS_PROFILE respected)."""

    def get_name(self) -> str:
        return "modelrepo-sigv4"

    def get_auth(self) -> SigV4Auth:
        from modelrepo.client.aws import CREDENTIAL_CHAIN, session

        aws = session()
        credentials = aws.get_credentials()
        if credentials is None:
            raise RuntimeError(f"MLFLOW_TRACKING_AUTH=modelrepo-sigv4 found no AWS credentials ({CREDENTIAL_CHAIN})")
        return SigV4Auth(credentials, aws.region_name)
