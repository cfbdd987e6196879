"""The local HTTP host: HTTP/1.1 framing by h11, one thread per connection, every request to `Api`.

h11 parses and writes every message and refuses what RFC 9112 calls malformed (bad or conflicting
Content-Length, transfer codings other than chunked, bad request lines and header fields, a missing
or doubled Host, oversized headers). This module only moves bytes between the socket and h11 and
keeps the rules of the conversation that h11 leaves to its user: a request is answered before the
next one is read, a body is always read to its end or the connection is closed (so a body is never
read as a request), and after a framing error nothing more is read from the connection.

Requests run on their connection's thread because `Api.handle` is synchronous and the core's group
commit batches registrations from concurrent threads; bench/README.md has the figures that chose
this over uvicorn and waitress.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

import h11

from modelrepo.api import Api, Request, Response, is_public, problem

log = logging.getLogger(__name__)

# An unread body up to this size is read and dropped so that the connection stays usable and the
# client reads our answer; a larger one is not read: the connection is closed after the answer.
DRAIN_LIMIT_BYTES = 32 * 1024 * 1024
# The request line and headers together; more gets 431 (h11's own default is 16 KiB).
MAX_HEADER_BYTES = 64 * 1024
# Headers the API reads: one value each, or the request is ambiguous.
SINGLE_VALUED = frozenset({b"authorization", b"content-type", b"idempotency-key"})
IDLE_TIMEOUT_SECONDS = 60.0
# How long stopping waits for requests in flight before it closes their connections anyway.
STOP_GRACE_SECONDS = 10.0
# After an error answer, how long and how much the client may still send before the socket is closed
# (closing a socket with unread data sends a reset, which can destroy the answer on its way).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
RECEIVE_BYTES = 64 * 1024


class _Refused(Exception):
    """The request cannot be served; `answer` says why, and the connection closes after it."""

    def __init__(self, answer: Response) -> None:
        super().__init__(answer.status)
        self.answer = answer


class ApiServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        api: Api,
        keys: Mapping[str, str] | None,
        *,
        stop_grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        """`keys`: each accepted API key by its name, the principal of the requests it authenticates;
        none: every request is served, without a principal."""
        self.api = api
        self._bearers = [(name, f"Bearer {key}".encode()) for name, key in (keys or {}).items()]
        self.stop_grace_seconds = stop_grace_seconds
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def authenticate(self, path: str, authorization: bytes | None) -> tuple[bool, str | None]:
        """Whether the request may be served, and the name of the key it carries (its principal).

        Every key is compared, in constant time each, so the time taken says nothing about which
        key came close."""
        found: str | None = None
        for name, expected in self._bearers:
            if hmac.compare_digest(authorization or b"", expected):
                found = name
        return (found is not None or not self._bearers or is_public(path)), found

    def server_close(self) -> None:
        """Stop gracefully: idle connections close now, requests in flight get `stop_grace_seconds`
        to finish (each answered with `Connection: close`), then the rest are cut off."""
        with self._lock:
            self._stopping = True
            for connection in self._connections:
                if not connection.busy:
                    connection.wake()
            deadline = time.monotonic() + self.stop_grace_seconds
            while any(c.busy for c in self._connections) and self._idle.wait(deadline - time.monotonic()):
                pass
            for connection in self._connections:
                connection.wake()
        super().server_close()

    # --- bookkeeping for a graceful stop, called by the connections ---

    def _enter(self, connection: _Connection) -> bool:
        with self._lock:
            if self._stopping:
                return False
            self._connections.add(connection)
            return True

    def _leave(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)
            self._idle.notify_all()

    def _begin_request(self, connection: _Connection) -> bool:
        """Mark a connection busy; False once stopping, so that no new request starts."""
        with self._lock:
            connection.busy = not self._stopping
            return connection.busy

    def _end_request(self, connection: _Connection) -> None:
        with self._lock:
            connection.busy = False
            self._idle.notify_all()


class _Handler(socketserver.BaseRequestHandler):
    server: ApiServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        # Headers and body go out in one write, but a stream is several: with Nagle's algorithm on,
        # a write would wait for the client's delayed ACK on every keep-alive request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IDLE_TIMEOUT_SECONDS)
        connection = _Connection(sock, self.server)
        if not self.server._enter(connection):
            return
        try:
            connection.run()
        except (TimeoutError, ConnectionError):
            pass  # the client went away or stayed silent: nothing to answer
        finally:
            self.server._leave(connection)


class _Connection:
    """One client connection: requests in order, each answered before the next is read."""

    def __init__(self, sock: socket.socket, server: ApiServer) -> None:
        self.sock = sock
        self.server = server
        self.busy = False
        self.head = False  # the request being answered is a HEAD: headers only
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)

    def wake(self) -> None:
        """Unblock a thread waiting for the next request (used when stopping)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        while True:
            try:
                event = self._next_event()
                if not isinstance(event, h11.Request):
                    return  # the client closed the connection between requests
                if not self.server._begin_request(self):
                    self._send(problem(503, "the server is stopping", {"Retry-After": "1", "Connection": "close"}))
                    return
                try:
                    self._serve(event)
                finally:
                    self.server._end_request(self)
            except h11.RemoteProtocolError as error:
                self._refuse(_framing_problem(error))
                return
            except _Refused as refused:
                self._refuse(refused.answer)
                return
            except (TimeoutError, ConnectionError):
                raise
            except Exception:
                log.exception("unexpected error while answering a request")
                self._refuse(problem(500, "the request could not be completed; the server logged why"))
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                self._close()
                return
            self.h11.start_next_cycle()

    def _next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(self.sock.recv(RECEIVE_BYTES))

    def _serve(self, event: h11.Request) -> None:
        if event.http_version not in (b"1.0", b"1.1"):
            raise _Refused(problem(400, f"HTTP/{event.http_version.decode()} is not spoken here: use HTTP/1.1"))
        method = event.method.decode("ascii")  # h11 admits only a token here
        self.head = method == "HEAD"
        headers = _headers(event)
        url = urlsplit(event.target.decode("ascii"))  # and only visible ASCII in the target
        length = int(headers[b"content-length"]) if b"content-length" in headers else None  # h11: 1*DIGIT
        allowed, principal = self.server.authenticate(url.path, headers.get(b"authorization"))
        if not allowed:
            self._answer_without_body(
                problem(
                    401,
                    "missing or wrong API key: send 'Authorization: Bearer <MODELREPO_API_KEY>'",
                    {"WWW-Authenticate": 'Bearer realm="modelrepo"'},
                ),
                length,
            )
            return
        body = self._read_body(length)
        if isinstance(body, Response):
            self._answer_without_body(body, length)
            return
        request = Request(
            method=method,
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={name.decode("ascii"): value.decode("latin-1") for name, value in headers.items()},
            body=body,
            principal=principal,
        )
        response = self.server.api.handle(request)
        log.debug("%s %s -> %d", method, url.path, response.status)
        self._send(response)

    def _read_body(self, length: int | None) -> bytes | Response:
        """The whole body, or the 413 that refuses it (the rest of the body then is still unread)."""
        limit = self.server.api.max_body_bytes
        if length is not None and length > limit:
            return problem(413, f"the request body is larger than {limit} bytes")
        if self.h11.client_is_waiting_for_100_continue:
            self.sock.sendall(self.h11.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")))
        parts: list[bytes] = []
        received = 0
        while True:
            event = self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            assert isinstance(event, h11.Data), event
            received += len(event.data)
            if received > limit:  # a chunked body: its size is known only as it arrives
                return problem(413, f"the request body is larger than {limit} bytes")
            parts.append(event.data)

    def _answer_without_body(self, answer: Response, length: int | None) -> None:
        """Answer before the body is read, then read past the body so that the connection's next
        bytes are the client's next request, or close it when that cannot be done cheaply."""
        if self.h11.client_is_waiting_for_100_continue:
            # The client holds the body back until it hears from us, and may send it anyway later.
            raise _Refused(answer)
        if length is not None and length > DRAIN_LIMIT_BYTES:
            raise _Refused(answer)
        self._send(answer)
        drained = 0
        while self.h11.their_state is h11.SEND_BODY:
            event = self._next_event()
            if isinstance(event, h11.Data):
                drained += len(event.data)
                if drained > DRAIN_LIMIT_BYTES:
                    self._close()
                    return

    def _send(self, response: Response) -> None:
        headers = [*response.headers.items(), ("Date", _http_date())]
        if self.server._stopping and "Connection" not in response.headers:
            headers.append(("Connection", "close"))  # the last answer on this connection
        if response.stream is None and "Content-Length" not in response.headers:
            headers.append(("Content-Length", str(len(response.body))))
        reason = _reason(response.status)
        try:
            head = self.h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
            if self.head:
                self.sock.sendall(head + self._end())
            elif response.stream is None:
                self.sock.sendall(head + self._body(response.body) + self._end())  # one write
            else:
                self.sock.sendall(head)
                for chunk in response.stream:
                    self.sock.sendall(self._body(chunk))
                self.sock.sendall(self._end())
        except h11.LocalProtocolError:
            # A stream that ended before (or ran past) its Content-Length: the client must see the
            # answer fail rather than take a short body for a whole one.
            log.error("an answer did not match its Content-Length; the connection was closed")
            self._close()
        finally:
            if response.stream is not None:
                response.stream.close()

    def _body(self, data: bytes) -> bytes:
        return self.h11.send(h11.Data(data=data)) or b""

    def _end(self) -> bytes:
        return self.h11.send(h11.EndOfMessage()) or b""

    def _refuse(self, answer: Response) -> None:
        """Answer an error after which nothing more is read, and close."""
        answer.headers["Connection"] = "close"
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(TimeoutError, ConnectionError):
                self._send(answer)
        self._close(linger=True)

    def _close(self, *, linger: bool = False) -> None:
        """Close; with `linger`, first let the client's pending bytes arrive and drop them, so that
        the kernel does not answer them with a reset that could destroy the answer just sent."""
        try:
            if linger:
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.settimeout(LINGER_SECONDS)
                dropped = 0
                while dropped < LINGER_BYTES and (data := self.sock.recv(RECEIVE_BYTES)):
                    dropped += len(data)
        except OSError:
            pass
        finally:
            self.sock.close()


def _headers(event: h11.Request) -> dict[bytes, bytes]:
    """Header names (lower case) to values; list-valued headers repeated are joined, as RFC 9110
    allows, and a repeated header that takes one value refuses the request."""
    found: dict[bytes, bytes] = {}
    for name, value in event.headers:
        if name in found:
            if name in SINGLE_VALUED:
                raise _Refused(problem(400, f"the header {name.decode('ascii')!r} is given more than once"))
            if name == b"content-length":
                continue  # h11 has checked that the copies agree
            found[name] += b", " + value
        else:
            found[name] = value
    if b"transfer-encoding" in found and b"content-length" in found:
        # RFC 9112 6.1: either may be a smuggler's; h11 would follow Transfer-Encoding.
        raise _Refused(problem(400, "send either Content-Length or Transfer-Encoding, not both"))
    return found


def _framing_problem(error: h11.RemoteProtocolError) -> Response:
    status = error.error_status_hint  # 400, or 431 for oversized headers
    if not 400 <= status < 500:  # 501 for a transfer coding other than chunked: still bad input
        status = 400
    return problem(status, f"the request is not valid HTTP/1.1: {error}")


@functools.cache
def _reason(status: int) -> bytes:
    return HTTPStatus(status).phrase.encode("ascii")


def _http_date() -> str:
    """The Date header (RFC 9110 6.6.1)."""
    return _format_date(int(time.time()))


@functools.lru_cache(maxsize=4)
def _format_date(second: int) -> str:
    return formatdate(second, usegmt=True)
