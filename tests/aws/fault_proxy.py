"""A small HTTP proxy in front of the moto server that loses answers the way a network does.

It can withhold the answer to a request after moto has applied it (the client then times out: a
write that committed although its caller cannot know; the proxy holds the connection until the
client gives up and closes it, so no sleep has to outlast the client's timeout), or answer with
DynamoDB's throttling error without forwarding. Like DynamoDB, and unlike moto, it honours TransactWriteItems'
`ClientRequestToken`: a retry carrying the token of a write that already succeeded gets that
write's answer again instead of being applied twice.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

THROTTLED = b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate exceeded"}'

# (operation, ClientRequestToken or None, whether moto applied it) → whether to withhold its answer.
Withhold = Callable[[str, str | None, bool], bool]


class FaultyProxy(ThreadingHTTPServer):
    """Forwards to moto; can withhold the answer to, or throttle, the next DynamoDB calls."""

    daemon_threads = True

    def __init__(self, upstream: str, *, withhold_for: float = 60.0) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream).netloc
        self.withhold_for = withhold_for  # a bound on waiting for the client to give up, not a wait
        self.withhold: dict[str, int] = {}  # operation → how many of its next answers to withhold
        self.throttle: dict[str, int] = {}  # operation → how many of its next calls to throttle
        self.decide: Withhold | None = None
        self.seen: list[str] = []
        self.counts: Counter[str] = Counter()  # "withheld", "replayed" (answered from a token)
        self.lock = threading.Lock()
        self._answers: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}  # token → answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self, faults: dict[str, int], operation: str) -> bool:
        with self.lock:
            if faults.get(operation, 0) > 0:
                faults[operation] -= 1
                return True
            return False

    def withholds(self, operation: str, token: str | None, applied: bool) -> bool:
        if self.take(self.withhold, operation):
            return True
        return self.decide is not None and self.decide(operation, token, applied)

    def replay(self, token: str | None) -> tuple[int, list[tuple[str, str]], bytes] | None:
        with self.lock:
            return self._answers.get(token) if token else None

    def remember(self, token: str | None, answer: tuple[int, list[tuple[str, str]], bytes]) -> None:
        if token and answer[0] == 200:
            with self.lock:
                self._answers[token] = answer

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


class _Forward(BaseHTTPRequestHandler):
    server: FaultyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        token = _request_token(operation, body)
        self.server.seen.append(operation)
        if self.server.take(self.server.throttle, operation):
            self._answer(400, [("Content-Type", "application/x-amz-json-1.0")], THROTTLED)
            return
        answer = self.server.replay(token)
        if answer is not None:
            self.server.count("replayed")
        else:
            answer = self._forward(body)
            self.server.remember(token, answer)
        if self.server.withholds(operation, token, answer[0] == 200):
            self.server.count("withheld")
            self._await_hang_up()  # moto applied the write; the client times out and hangs up
            self.close_connection = True
            return
        self._answer(*answer)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_POST  # noqa: N815 - stdlib naming

    def _await_hang_up(self) -> None:
        """Hold the connection, unanswered, until the client closes it (its read timed out)."""
        self.connection.settimeout(self.server.withhold_for)
        try:
            while self.rfile.read1(4096):
                pass  # the client waits for this answer: it sends nothing until it hangs up
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            upstream.request(self.command, self.path, body, dict(self.headers.items()))
            answer = upstream.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            upstream.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _request_token(operation: str, body: bytes) -> str | None:
    if operation != "TransactWriteItems":
        return None
    try:
        token = json.loads(body).get("ClientRequestToken")
    except ValueError:
        return None
    return str(token) if token else None


@contextmanager
def running_proxy(upstream: str) -> Iterator[FaultyProxy]:
    server = FaultyProxy(upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
