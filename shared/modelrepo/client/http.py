"""`HttpTransport`: the client's way over the network, with httpx.

Why httpx: one `httpx.Client` keeps a pool of keep-alive connections (a CLI command or a script
making many calls opens one connection, not one per call), has separate connect/read/write/pool
timeouts, is fully typed (mypy strict sees its API), streams bodies, and its `httpx.Auth` flow
gives each scheme (Bearer, function key, Entra token, SigV4 over the exact bytes sent) one small
class. urllib3 would need the signing, streaming and URL handling written around it.

Redirects are never followed by httpx: the client follows a download's 307 itself, so that the
API's credentials go only to the API's origin and a time-limited storage link is fetched bare.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from urllib.parse import quote

import httpx

import modelrepo
from modelrepo.api import Request
from modelrepo.client._client import Reply
from modelrepo.client.errors import ClientError, Unreachable

CHUNK_BYTES = 256 * 1024
USER_AGENT = f"modelrepo-client/{modelrepo.__version__}"

# Signed storage links carry their signature in the query (S3: X-Amz-Signature, Azure SAS: sig), a
# function key may travel as ?code=, and botocore logs its canonical request (with the session
# token) at DEBUG. These loggers see such URLs and requests; their records are redacted.
_SECRET_PARAMETERS = re.compile(
    r"(?i)((?:x-amz-signature|x-amz-security-token|x-amz-credential|sig|code|skoid|sktid)=)[^&\s'\"<>]+"
)
_SECRET_HEADER_LINES = re.compile(r"(?im)^((?:x-amz-security-token|authorization|x-functions-key):).*$")
REDACTED_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "botocore.auth",
)


class _Redact(logging.Filter):
    """Rewrites a record's message without the secrets signed links and signers show."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _SECRET_HEADER_LINES.sub(r"\1 <redacted>", _SECRET_PARAMETERS.sub(r"\1<redacted>", message))
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_logs() -> None:
    """Install the redaction once on the loggers that may see signed links or requests."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _Redact) for existing in logger.filters):
            logger.addFilter(_Redact())


redact_logs()


def base_url(url: str) -> httpx.URL:
    """The service's root: what `/api/...` paths hang under (a trailing `/api` is the API itself)."""
    parsed = httpx.URL(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ClientError(f"the URL {url!r} is not an http(s) URL")
    path = parsed.path.rstrip("/").removesuffix("/api")
    return parsed.copy_with(path=path or "/", query=None, fragment=None)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class HttpTransport:
    """Requests to one service over a pool of connections, authenticated by `auth`."""

    def __init__(self, url: str, auth: httpx.Auth | None = None, *, timeout: float = 30.0) -> None:
        self.base = base_url(url)
        self.label = str(self.base).rstrip("/")
        timeouts = httpx.Timeout(timeout, connect=min(10.0, timeout), pool=timeout)
        # retries=2: only attempts that never connected are repeated (nothing was sent).
        self._http = httpx.Client(
            auth=auth,
            timeout=timeouts,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            transport=httpx.HTTPTransport(retries=2),
        )
        self._links: httpx.Client | None = None
        self._timeout = timeouts

    def __repr__(self) -> str:
        return f"HttpTransport({self.label!r}, auth={self._http.auth!r})"

    def send(self, request: Request, *, stream: bool = False) -> Reply:
        url = self._url(request.path, request.query)
        outgoing = self._http.build_request(request.method, url, headers=dict(request.headers), content=request.body)
        return self._exchange(self._http, outgoing, stream)

    def follow(self, location: str, *, relative_to: str | None = None, stream: bool = False) -> Reply:
        target = httpx.URL(relative_to or str(self.base)).join(location)
        if target.scheme not in ("http", "https"):
            raise ClientError(f"refusing to follow a redirect to a {target.scheme or 'relative'} URL")
        if self.base.scheme == "https" and target.scheme != "https":
            raise ClientError("refusing to follow a redirect from https to plain http")
        if _origin(target) == _origin(self.base):
            return self._exchange(self._http, self._http.build_request("GET", target), stream)
        # Another host (a presigned S3 link, a SAS link): no credentials, none of our headers.
        if self._links is None:
            self._links = httpx.Client(
                timeout=self._timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
            )
        return self._exchange(self._links, self._links.build_request("GET", target), stream)

    def close(self) -> None:
        self._http.close()
        if self._links is not None:
            self._links.close()

    def _url(self, path: str, query: Mapping[str, str]) -> httpx.URL:
        raw = self.base.raw_path.rstrip(b"/").decode("ascii") + path
        if query:
            # RFC 3986 unreserved characters only, as SigV4's canonical query string has them.
            raw += "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query.items())
        return self.base.copy_with(raw_path=raw.encode("ascii"))

    def _exchange(self, client: httpx.Client, outgoing: httpx.Request, stream: bool) -> Reply:
        where = f"{outgoing.url.scheme}://{outgoing.url.netloc.decode('ascii')}"
        try:
            response = client.send(outgoing, stream=True)
        except httpx.TimeoutException:
            raise Unreachable(f"{where} did not answer within the timeout") from None
        except httpx.TransportError as error:
            raise Unreachable(f"cannot reach {self.label if client is self._http else where}: {error}") from None
        headers = {name.lower(): value for name, value in response.headers.items()}
        answered = str(response.url)
        if stream and 200 <= response.status_code < 300:
            return Reply(
                response.status_code,
                headers,
                chunks=self._chunks(response, where),
                url=answered,
                closer=response.close,
            )
        try:
            body = response.read()
        except httpx.HTTPError as error:
            raise Unreachable(f"the answer from {where} broke off: {type(error).__name__}") from None
        finally:
            response.close()
        return Reply(response.status_code, headers, body, url=answered)

    @staticmethod
    def _chunks(response: httpx.Response, where: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK_BYTES)
        except httpx.HTTPError as error:
            raise Unreachable(f"the download from {where} broke off: {type(error).__name__}") from None
