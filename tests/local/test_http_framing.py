"""HTTP/1.1 framing of `modelrepo serve`, tried with raw bytes as a hostile client would send them.

Every exchange ends in a request the server must close after (`Connection: close`) or in an error
that closes the connection, so each test reads until the server closes and then looks at every
answer it got. A request smuggled inside a body asks for `/api/smuggled`; it must never be answered.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
from pydantic import SecretStr

from modelrepo.local.runtime import LocalRuntime
from modelrepo.settings import LocalSettings

KEY = "framing-test-key"
AUTH = f"Authorization: Bearer {KEY}\r\n"
SMUGGLED = f"GET /api/smuggled HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()
CLOSING_HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
REGISTER_BODY = b'{"experimentId": "exp 1"}'  # invalid on purpose: the 400 names the field, proving it was read


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    answers: list[Answer]
    raw: bytes

    @property
    def statuses(self) -> list[int]:
        return [a.status for a in self.answers]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    root: Path = tmp_path_factory.mktemp("framing")
    runtime = LocalRuntime(LocalSettings(root=root, port=0, api_key=SecretStr(KEY)))
    runtime.start()
    url = urlsplit(runtime.url)
    assert url.hostname is not None and url.port is not None
    yield url.hostname, url.port
    runtime.stop()


def exchange(server: tuple[str, int], *chunks: bytes, methods: tuple[str, ...] = ()) -> Exchange:
    """Send `chunks` on one connection, read until the server closes it, and parse every answer.

    Parsing uses h11 as a client, so an answer that is not valid HTTP/1.1 (an HTTP/0.9 reply, a bare
    body) fails the test instead of being guessed at.
    """
    with socket.create_connection(server, timeout=30) as connection:
        for chunk in chunks:
            connection.sendall(chunk)
        raw = b""
        while True:
            try:
                data = connection.recv(1 << 16)
            except ConnectionResetError:
                break  # an error that closes early may reset; the answers read so far still count
            if not data:
                break
            raw += data
    return Exchange(_parse_answers(raw, methods), raw)


def _parse_answers(raw: bytes, methods: tuple[str, ...] = ()) -> list[Answer]:
    """Every answer in `raw`; `methods` names the request of each (GET where not given)."""
    answers: list[Answer] = []
    client = h11.Connection(h11.CLIENT)
    client.receive_data(raw)
    client.receive_data(b"")
    while client.trailing_data[0]:
        # h11 only reads an answer to a request it has seen sent; the method only decides HEAD framing.
        method = methods[len(answers)] if len(answers) < len(methods) else "GET"
        client.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        event = client.next_event()
        assert isinstance(event, h11.Response), f"not an HTTP/1.1 answer: {raw!r}"
        body = b""
        while True:
            part = client.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"an answer ended early ({part!r}): {raw!r}")
        headers = {k.decode().lower(): v.decode() for k, v in event.headers}
        answers.append(Answer(event.status_code, headers, body))
        if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
            break
        client.start_next_cycle()
    assert not client.trailing_data[0], f"bytes after the last answer: {raw!r}"
    return answers


def post(path: str, body: bytes, *headers: str, length: str | None = None, auth: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [AUTH.strip()] if auth else []
    lines += [f"Content-Length: {len(body) if length is None else length}"] if length != "" else []
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def assert_refused_and_nothing_smuggled(result: Exchange, status: int = 400) -> None:
    """One 4xx problem answer, and nothing that came after it on the wire was answered."""
    assert result.statuses[:1] == [status], result.raw
    assert result.answers[0].headers["content-type"] == "application/problem+json", result.raw
    assert b"smuggled" not in result.raw, result.raw
    # after a framing error the connection is closed: the bytes that follow cannot be trusted
    assert result.statuses == [status], result.raw


# --- Content-Length ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [
        b"\xb2",  # superscript two in Latin-1, which str.isdigit() takes for a digit and int() refuses
        "\u00b2".encode(),
        "\u0665".encode(),  # ARABIC-INDIC DIGIT FIVE, which int() reads as 5
        b"+5",
        b"-5",
        b"0x5",
        b"5 5",
        b"5,6",  # a list that disagrees with itself (RFC 9110 8.6 lets "5, 5" mean 5)
        b"5.0",
        b"",
        b"99999999999999999999999",
    ],
)
def test_a_malformed_content_length_gets_a_400_and_the_connection_closes(
    server: tuple[str, int], length: bytes
) -> None:
    request = post("/api/register", REGISTER_BODY, length="").replace(
        b"\r\n\r\n", b"\r\nContent-Length: " + length + b"\r\n\r\n", 1
    )
    result = exchange(server, request + SMUGGLED + CLOSING_HEALTH)
    assert_refused_and_nothing_smuggled(result)


def test_two_conflicting_content_lengths_are_refused_and_the_body_is_not_a_request(server: tuple[str, int]) -> None:
    body = b"{}123" + SMUGGLED
    request = post("/api/register", body, "Content-Length: 5", length=str(len(body)))
    result = exchange(server, request + CLOSING_HEALTH)
    assert_refused_and_nothing_smuggled(result)


def test_transfer_encoding_with_content_length_is_refused(server: tuple[str, int]) -> None:
    chunked = b"5\r\n{}123\r\n0\r\n\r\n" + SMUGGLED
    request = post("/api/register", chunked, "Transfer-Encoding: chunked", length="5")
    result = exchange(server, request + CLOSING_HEALTH)
    assert_refused_and_nothing_smuggled(result)


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip", "identity", "chunked, chunked", "xchunked"])
def test_a_transfer_coding_other_than_chunked_is_refused(server: tuple[str, int], coding: str) -> None:
    request = post("/api/register", REGISTER_BODY + SMUGGLED, f"Transfer-Encoding: {coding}")
    result = exchange(server, request + CLOSING_HEALTH)
    assert_refused_and_nothing_smuggled(result)


# --- chunked bodies ------------------------------------------------------------------------------


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_like_any_other(server: tuple[str, int]) -> None:
    request = post("/api/register", chunked(REGISTER_BODY), "Transfer-Encoding: chunked", length="")
    result = exchange(server, request, CLOSING_HEALTH)
    assert result.statuses == [400, 200], result.raw
    assert "experimentId" in result.answers[0].json()["detail"]  # the API saw the whole body


def test_a_chunked_body_over_the_limit_gets_a_413_and_is_not_read_as_a_request(server: tuple[str, int]) -> None:
    body = chunked(b"x" * (256 * 1024) + SMUGGLED, size=60_000)
    result = exchange(server, post("/api/register", body, "Transfer-Encoding: chunked", length="") + CLOSING_HEALTH)
    assert b"smuggled" not in result.raw
    assert result.statuses == [413, 200], result.raw[:300]  # the body was read past, not as requests


@pytest.mark.parametrize("bad", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"-2\r\n{}\r\n0\r\n\r\n"])
def test_a_malformed_chunk_gets_a_400(server: tuple[str, int], bad: bytes) -> None:
    result = exchange(server, post("/api/register", bad + SMUGGLED, "Transfer-Encoding: chunked", length=""))
    assert_refused_and_nothing_smuggled(result)


# --- the API key ---------------------------------------------------------------------------------


def test_a_401_reads_past_the_body_so_the_next_request_is_the_clients(server: tuple[str, int]) -> None:
    unauthorized = post("/api/register", SMUGGLED, auth=False)
    result = exchange(server, unauthorized + CLOSING_HEALTH)
    assert b"smuggled" not in result.raw, result.raw
    assert result.statuses == [401, 200], result.raw  # keep-alive still works: the next request is answered
    assert result.answers[0].headers["www-authenticate"].startswith("Bearer")
    assert result.answers[1].json() == {"status": "ok"}


def test_a_401_to_a_chunked_request_is_not_followed_by_its_body(server: tuple[str, int]) -> None:
    unauthorized = post("/api/register", chunked(SMUGGLED), "Transfer-Encoding: chunked", length="", auth=False)
    result = exchange(server, unauthorized + CLOSING_HEALTH)
    assert b"smuggled" not in result.raw, result.raw
    assert result.statuses == [401, 200], result.raw


def test_a_401_to_a_body_over_the_limit_closes_instead_of_reading_it(server: tuple[str, int]) -> None:
    huge = post("/api/register", b"", auth=False, length=str(1 << 40))
    result = exchange(server, huge + SMUGGLED)
    assert result.statuses == [401], result.raw
    assert result.answers[0].headers.get("connection") == "close"


# --- request lines and headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b"GET /api/health\r\n",  # HTTP/0.9: must not get a bare body back
        b"GET /api/health HTTP/1.1 extra\r\n",
        b"GET /api/health HTTP/2.0\r\n",
        b"GET  /api/health HTTP/1.1\r\n",
        b"G\x00T /api/health HTTP/1.1\r\n",
        b"GET /api/he alth HTTP/1.1\r\n",
        b"GET /api/he\x7flth HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",  # a TLS client hello sent to plain HTTP
    ],
)
def test_a_malformed_request_line_gets_a_4xx_problem(server: tuple[str, int], line: bytes) -> None:
    result = exchange(server, line + b"Host: x\r\n\r\n" + SMUGGLED)
    assert len(result.answers) == 1, result.raw
    assert 400 <= result.statuses[0] < 500, result.raw
    assert b"smuggled" not in result.raw


@pytest.mark.parametrize(
    "headers",
    [
        b" Host: x\r\n",  # the first header line folded onto the request line
        b"Host: x\r\nContent-Length : 0\r\n",  # whitespace before the colon
        b"Host: x\r\nX-Bad\x00Name: 1\r\n",
        b"Host: x\r\nX-Bad-Value: a\x00b\r\n",
        b"Host: x\r\nno colon here\r\n",
        b"Host: x\r\nHost: y\r\n",  # two hosts
        f"Host: x\r\n{AUTH}Authorization: Bearer other\r\n".encode(),  # which key counts?
        b"Host: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\n",
        b"",  # no Host in HTTP/1.1
    ],
)
def test_a_malformed_header_gets_a_400(server: tuple[str, int], headers: bytes) -> None:
    result = exchange(server, b"GET /api/health HTTP/1.1\r\n" + headers + b"\r\n" + SMUGGLED)
    assert_refused_and_nothing_smuggled(result)


def test_a_folded_header_line_is_part_of_the_value_before_it(server: tuple[str, int]) -> None:
    """RFC 9112 5.2 lets a server unfold obs-fold into a space; the folded line is never a header."""
    folded = f"GET /api/experiments/e/models HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n {AUTH}Connection: close\r\n\r\n"
    result = exchange(server, folded.encode())
    assert result.statuses in ([400], [401]), result.raw


def test_oversized_headers_get_a_431_and_the_connection_closes(server: tuple[str, int]) -> None:
    many = b"".join(b"X-Padding-%d: %s\r\n" % (n, b"p" * 4000) for n in range(64))  # 256 KiB in all
    result = exchange(server, b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n" + SMUGGLED)
    assert_refused_and_nothing_smuggled(result, status=431)


def test_one_huge_header_line_gets_a_431(server: tuple[str, int]) -> None:
    line = b"X-Huge: " + b"h" * (1 << 20) + b"\r\n"
    result = exchange(server, b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n" + SMUGGLED)
    assert result.statuses[:1] == [431], result.raw[:300]
    assert b"smuggled" not in result.raw


# --- pipelining and keep-alive -------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(server: tuple[str, int]) -> None:
    openapi = b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    bad_json = post("/api/register", b'{"experimentId": 1, "experimentId": 2}')
    result = exchange(server, openapi + bad_json + CLOSING_HEALTH)
    assert result.statuses == [200, 400, 200], result.raw[:300]
    assert result.answers[0].json()["openapi"].startswith("3.1")
    assert "experimentId" in result.answers[1].json()["detail"]


def test_pipelined_requests_after_a_framing_error_are_not_answered(server: tuple[str, int]) -> None:
    broken = post("/api/register", REGISTER_BODY, length="\xb2")  # sent as Latin-1: one byte
    result = exchange(server, broken + SMUGGLED + CLOSING_HEALTH)
    assert_refused_and_nothing_smuggled(result)


def test_head_gets_the_headers_of_get_without_a_body(server: tuple[str, int]) -> None:
    head = b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    result = exchange(server, head + CLOSING_HEALTH, methods=("HEAD", "GET"))
    assert len(result.answers) == 2, result.raw  # no body followed the first: the second parses as an answer
    assert result.answers[0].body == b""
    assert result.answers[1].json() == {"status": "ok"}


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: tuple[str, int]) -> None:
    head = post("/api/register", b"", "Expect: 100-continue", length=str(len(REGISTER_BODY)))
    with socket.create_connection(server, timeout=30) as connection:
        connection.sendall(head)
        interim = connection.recv(1 << 16)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        connection.sendall(REGISTER_BODY + CLOSING_HEALTH)
        raw = interim.split(b"\r\n\r\n", 1)[1]
        while data := connection.recv(1 << 16):
            raw += data
    answers = _parse_answers(raw)
    assert [a.status for a in answers] == [400, 200], raw
