"""The local HTTP host: a threaded server that hands every request to `modelrepo.api.Api`."""

from __future__ import annotations

import hmac
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from modelrepo.api import Api, Request, Response, is_public, problem

log = logging.getLogger(__name__)

# An oversized body up to this size is read and dropped before the 413; a larger one is not read.
DRAIN_LIMIT_BYTES = 32 * 1024 * 1024


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api, api_key: str | None) -> None:
        super().__init__(address, _RequestHandler)
        self.api = api
        self.api_key = api_key

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def authorized(self, path: str, authorization: str | None) -> bool:
        if self.api_key is None or is_public(path):
            return True
        expected = f"Bearer {self.api_key}".encode()
        return hmac.compare_digest((authorization or "").encode("utf-8", "replace"), expected)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer
    timeout = 60
    # Headers and body go out as two writes; with Nagle's algorithm on, the second waits for the
    # client's delayed ACK (~40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True

    def __getattr__(self, name: str) -> Any:
        """Every method (`do_GET`, `do_TRACE`, …) goes to the API, which answers 405 where it must."""
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        if not self.server.authorized(url.path, self.headers.get("Authorization")):
            self._send(
                problem(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <MODELREPO_API_KEY>'",
                    {"WWW-Authenticate": 'Bearer realm="modelrepo"'},
                )
            )
            return
        body = self._read_body()
        if isinstance(body, Response):
            self.close_connection = True
            body.headers["Connection"] = "close"
            self._send(body)
            return
        request = Request(
            method=self.command,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self._send(self.server.api.handle(request))

    def _read_body(self) -> bytes | Response:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return problem(411, "send the body with a Content-Length, not chunked")
        raw = self.headers.get("Content-Length", "0") or "0"
        if not raw.isdigit():
            return problem(400, f"Content-Length {raw!r} is not a number")
        length = int(raw)
        if length > self.server.api.max_body_bytes:
            if length <= DRAIN_LIMIT_BYTES:
                self._discard(length)  # so the client reads our answer instead of a reset connection
            return problem(413, f"the request body is larger than {self.server.api.max_body_bytes} bytes")
        return self.rfile.read(length)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.stream is None:
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if response.stream is None:
                self.wfile.write(response.body)
            else:
                for chunk in response.stream:
                    self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if response.stream is not None:
                response.stream.close()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)
