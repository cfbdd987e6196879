"""The local HTTP server's own duties beside framing: stopping gracefully, and never sending a body
that disagrees with its Content-Length. Requests are held in flight with events, never with sleeps."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from modelrepo.api import Api, BodyStream, Request, Response
from modelrepo.local.bootstrap import build_repository
from modelrepo.local.server import ApiServer
from modelrepo.settings import LocalSettings
from tests.local.test_http_framing import CLOSING_HEALTH, _parse_answers

WAIT = 30  # seconds before a test gives up on an event that should have happened long before


class ScriptedApi(Api):
    """The real API, except for two paths: one that waits until released, one with a lying stream."""

    def __init__(self, root: Path) -> None:
        super().__init__(build_repository(LocalSettings(root=root)))
        self.entered = threading.Event()
        self.release = threading.Event()

    def handle(self, request: Request) -> Response:
        if request.path == "/api/held":
            self.entered.set()
            assert self.release.wait(WAIT)
            return Response(200, {"Content-Type": "text/plain"}, b"finished")
        if request.path == "/api/short":
            stream = BodyStream(io.BytesIO(b"only eleven"), ExitStack())
            return Response(200, {"Content-Type": "application/octet-stream", "Content-Length": "100"}, stream=stream)
        return super().handle(request)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[ApiServer, ScriptedApi]]:
    api = ScriptedApi(tmp_path)
    # A grace far beyond any test's length: the request in flight is released by the test, never by time.
    server = ApiServer(("127.0.0.1", 0), api, None, stop_grace_seconds=3600)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, api
    api.release.set()
    if thread.is_alive():
        server.shutdown()
        server.server_close()
    api.repository.metadata.close()


def connect(server: ApiServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=WAIT)


def read_to_end(connection: socket.socket) -> bytes:
    raw = b""
    while data := connection.recv(1 << 16):
        raw += data
    return raw


def test_stopping_closes_idle_connections_and_lets_a_request_in_flight_finish(
    running: tuple[ApiServer, ScriptedApi],
) -> None:
    server, api = running
    idle = connect(server)
    idle.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(1 << 16).startswith(b"HTTP/1.1 200 ")  # answered; the connection stays open
    busy = connect(server)
    busy.sendall(b"GET /api/held HTTP/1.1\r\nHost: x\r\n\r\n")
    assert api.entered.wait(WAIT)

    stopped = threading.Event()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    assert read_to_end(idle) == b""  # closed by the stop, not by a timeout (that would raise)
    assert not stopped.is_set()  # still waiting for the request in flight
    api.release.set()
    [answer] = _parse_answers(read_to_end(busy))
    assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"finished", "close")
    stopper.join(WAIT)
    assert stopped.is_set()
    with pytest.raises(ConnectionRefusedError):
        connect(server)
    idle.close()
    busy.close()


def test_a_stream_shorter_than_its_content_length_is_cut_off_not_passed_as_whole(
    running: tuple[ApiServer, ScriptedApi],
) -> None:
    server, _ = running
    with connect(server) as connection:
        connection.sendall(b"GET /api/short HTTP/1.1\r\nHost: x\r\n\r\n" + CLOSING_HEALTH)
        raw = read_to_end(connection)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 100" in head
    assert body == b"only eleven"  # then the connection closed: the client sees a truncated answer
    assert b"HTTP/1.1 200 OK" not in body  # and the next request was not answered inside the body
