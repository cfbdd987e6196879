"""Stand-ins for what Azurite lacks on the events path: an Event Grid topic and the queue trigger.

`LoopbackTopic` is an HTTP (or HTTPS, with a certificate made here) server on 127.0.0.1 in the
place of an Event Grid custom topic's endpoint. It checks every publish request the way the
service's CloudEvents 1.0 input schema takes it: POST to the endpoint with `api-version`, batch
mode (`application/cloudevents-batch+json`), the credential (`aeg-sas-key` or an Entra ID
bearer token), a JSON array of structured CloudEvents; it answers 200 (what the SDK counts as
accepted), or what a test tells it to. Requests it refuses are kept for the test to see.

`QueueTriggerHost` does what the Functions host does for `deliver_events`: it receives the hint
queue's messages, decodes them as host.json's `messageEncoding` says, builds the `QueueMessage`
with the worker's own converter, invokes the function (several at once, as the host does), deletes
a message once its invocation succeeded, and moves one that failed `maxDequeueCount` times to
`<queue>-poison`.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceExistsError
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import QueueMessage, QueueServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.azure.host import HOST_JSON, user_function
from tests.fixtures.consumers import first_copies, sequences

PATH = "/api/events"
API_VERSION = "2018-01-01"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
REQUIRED = ("specversion", "id", "source", "type")
QUEUES = HOST_JSON["extensions"]["queues"]


@dataclass
class Publish:
    """One request as the topic saw it."""

    headers: dict[str, str]
    query: dict[str, list[str]]
    events: list[dict[str, Any]]


@dataclass
class LoopbackTopic:
    key: str | None = None  # accept `aeg-sas-key: <key>`
    token: str | None = None  # accept `Authorization: Bearer <token>`
    url: str = ""
    status: int = 200  # the answer to a well-formed request
    statuses: list[int] = field(default_factory=list)  # answers for the next requests, first first
    hold: threading.Event | None = None  # while set to an unset Event, requests are taken and wait
    arrived: threading.Event = field(default_factory=threading.Event)
    accepted: list[Publish] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.seen += 1
        url = urlsplit(path)
        problem = self._problem(url.path, parse_qs(url.query), headers, body)
        if problem:
            with self.lock:
                self.refused.append(problem)
            return 400
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else self.status
            if status == 200:  # Event Grid has the events from here on, whatever becomes of its answer
                self.accepted.append(Publish(headers, parse_qs(url.query), json.loads(body)))
        hold = self.hold
        self.arrived.set()
        if hold is not None:
            hold.wait(60)
        return status

    def _problem(self, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes) -> str:
        if path != PATH or query.get("api-version") != [API_VERSION]:
            return f"not the topic endpoint: {path} {query}"
        if headers.get("content-type") != BATCH_CONTENT_TYPE:
            return f"not CloudEvents batch mode: {headers.get('content-type')}"
        if not self._authorized(headers):
            return "no valid credential"
        try:
            events = json.loads(body)
        except ValueError:
            return "the body is not JSON"
        if not isinstance(events, list) or not events:
            return "the body is not a non-empty array"
        for event in events:
            if not isinstance(event, dict) or any(not isinstance(event.get(a), str) for a in REQUIRED):
                return f"not a structured CloudEvent: {event!r}"
            if event["specversion"] != "1.0":
                return f"not CloudEvents 1.0: {event['specversion']!r}"
        if len(body) > 1024 * 1024:
            return f"{len(body)} bytes: above Event Grid's 1 MB per request"
        return ""

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.key is not None and headers.get("aeg-sas-key") == self.key:
            return True
        return self.token is not None and headers.get("authorization") == f"Bearer {self.token}"

    def events(self) -> list[dict[str, Any]]:
        """Every event the topic accepted, in the order it accepted them (redeliveries included)."""
        with self.lock:
            return [event for publish in self.accepted for event in publish.events]

    def unique(self) -> list[dict[str, Any]]:
        """What a consumer keeps: each event once, in arrival order."""
        return first_copies(self.events())

    def sequences(self, subject_prefix: str) -> list[int]:
        return sequences(self.events(), subject_prefix)


@contextmanager
def serve_topic(topic: LoopbackTopic, tls: ssl.SSLContext | None = None) -> Iterator[LoopbackTopic]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = topic.handle(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with suppress(OSError):  # a sender killed meanwhile never reads this answer
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    topic.url = f"{scheme}://127.0.0.1:{server.server_address[1]}{PATH}"
    thread = threading.Thread(target=server.serve_forever, name="loopback-topic", daemon=True)
    thread.start()
    try:
        yield topic
    finally:
        if topic.hold is not None:
            topic.hold.set()
        server.shutdown()
        server.server_close()


def certificate_for_loopback(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (the CA's PEM for the client to
    trust, the server's TLS context)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelrepo test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context


class StaticTokenCredential:
    """Stands in for DefaultAzureCredential (no Entra ID here): hands out one token and remembers
    the scopes it was asked for."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        expires = int(dt.datetime.now(dt.UTC).timestamp()) + 3600
        return AccessToken(self.token, expires)


@dataclass
class QueueTriggerHost:
    """Runs `deliver_events` for the hint queue's messages the way the Functions host does."""

    queues: QueueServiceClient
    queue: str
    workers: int = int(QUEUES["batchSize"])
    invocations: int = 0
    failures: list[Exception] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drain(self) -> int:
        """Process messages until the queue is empty; how many invocations ran."""
        assert QUEUES["messageEncoding"] == "base64"
        queue = self.queues.get_queue_client(self.queue)
        start = self.invocations
        while True:
            messages = list(queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=600))
            if not messages:
                return self.invocations - start
            with ThreadPoolExecutor(self.workers) as pool:
                outcomes = list(pool.map(self._invoke, messages))
            for message, succeeded in zip(messages, outcomes, strict=True):
                if succeeded:
                    queue.delete_message(message)
                elif message.dequeue_count is not None and message.dequeue_count >= int(QUEUES["maxDequeueCount"]):
                    self._poison(message)
                    queue.delete_message(message)
                else:
                    queue.update_message(message, visibility_timeout=0)

    def _invoke(self, message: QueueMessage) -> bool:
        body = base64.b64decode(str(message.content), validate=True)
        metadata = {
            "Id": Datum(message.id, "string"),
            "DequeueCount": Datum(message.dequeue_count or 1, "int"),
            "PopReceipt": Datum(message.pop_receipt or "", "string"),
        }
        trigger = QueueMessageInConverter.decode(Datum(body, "bytes"), trigger_metadata=metadata)
        assert isinstance(trigger, func.QueueMessage)
        with self.lock:
            self.invocations += 1
        try:
            user_function("deliver_events")(trigger)
        except Exception as error:  # the host logs it and retries the message
            with self.lock:
                self.failures.append(error)
            return False
        return True

    def _poison(self, message: QueueMessage) -> None:
        poison = self.queues.get_queue_client(f"{self.queue}-poison")
        with suppress(ResourceExistsError):
            poison.create_queue()
        poison.send_message(str(message.content))
