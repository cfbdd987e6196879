"""A real HTTP/1.1 server on 127.0.0.1 for the client tests: it answers through a test's function
and keeps every request exactly as it came over the wire (raw path, raw query, headers, body) and
how many connections carried them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Wire:
    """A request as received; header names in lower case."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Wire], Answer]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handle: Handler) -> None:
        super().__init__(("127.0.0.1", 0), _Exchange)
        self.handle_wire = handle
        self.requests: list[Wire] = []
        self.connections = 0
        self.lock = threading.Lock()


class _Exchange(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1
            self.number = self.server.connections

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._exchange
        raise AttributeError(name)

    def _exchange(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        wire = Wire(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, self.number)
        with self.server.lock:
            self.server.requests.append(wire)
        try:
            answer = self.server.handle_wire(wire)
        except Exception as error:  # a broken test front must show, not hang the client
            answer = Answer(599, {"Content-Type": "text/plain"}, f"test front failed: {error!r}".encode())
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


class Loopback:
    def __init__(self, server: _Server) -> None:
        self._server = server

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Wire]:
        with self._server.lock:
            return list(self._server.requests)

    @property
    def connections(self) -> int:
        return self._server.connections


@contextmanager
def loopback(handle: Handler) -> Iterator[Loopback]:
    server = _Server(handle)
    thread = threading.Thread(target=server.serve_forever, name="loopback", daemon=True)
    thread.start()
    try:
        yield Loopback(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
