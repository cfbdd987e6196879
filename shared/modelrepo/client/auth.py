"""How the client proves who it is to each host, as `httpx.Auth` flows.

| host | scheme | header |
|---|---|---|
| `modelrepo serve` with MODELREPO_API_KEY | `BearerAuth` | `Authorization: Bearer <key>` |
| Azure Functions (function level) | `FunctionKeyAuth` | `x-functions-key: <key>` |
| Azure, app behind App Service authentication | `EntraAuth` | `Authorization: Bearer <Entra token>` |
| API Gateway with IAM auth | `modelrepo.client.aws.SigV4Auth` | `Authorization: AWS4-HMAC-SHA256 ...` |

Each also names the caller to the host, which is what a host derives the request's principal
from. Secrets are kept in `SecretStr` and no `repr` shows them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

# Renew an Entra token this long before it expires.
TOKEN_REFRESH_MARGIN_SECONDS = 300


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <key>`: the API key of `modelrepo serve`."""

    def __init__(self, key: str | SecretStr) -> None:
        self._key = key if isinstance(key, SecretStr) else SecretStr(key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(key=**********)"


class FunctionKeyAuth(httpx.Auth):
    """`x-functions-key: <key>`: a function (or host) key of the Azure Functions app.

    The header, not `?code=`: a query string ends up in access logs, a header does not.
    """

    def __init__(self, key: str | SecretStr) -> None:
        self._key = key if isinstance(key, SecretStr) else SecretStr(key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["x-functions-key"] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "FunctionKeyAuth(key=**********)"


class AccessTokenLike(Protocol):
    """What azure-core's `AccessToken` offers: the token and its expiry (seconds since the epoch)."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class TokenCredential(Protocol):
    """Any azure-identity credential (DefaultAzureCredential, AzureCliCredential, ...)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessTokenLike: ...


def default_scope(app_id: str) -> str:
    """The scope of an app registration's API: its Application ID URI, `api://<app-id>`, `/.default`."""
    return f"api://{app_id}/.default"


class EntraAuth(httpx.Auth):
    """`Authorization: Bearer <token>` with an Entra ID token for `scope`, renewed before it expires.

    For a function app behind App Service authentication, whose app registration exposes the
    API; `function_key` is sent too when the functions also require one.
    """

    def __init__(
        self,
        credential: TokenCredential,
        scope: str,
        *,
        function_key: str | SecretStr | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self.scope = scope
        self._function_key = SecretStr(function_key) if isinstance(function_key, str) else function_key
        self._clock = clock
        self._token: AccessTokenLike | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._token.expires_on - TOKEN_REFRESH_MARGIN_SECONDS <= self._clock():
                self._token = self._credential.get_token(self.scope)
            return self._token.token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        if self._function_key is not None:
            request.headers["x-functions-key"] = self._function_key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"EntraAuth(scope={self.scope!r}, credential={type(self._credential).__name__})"
