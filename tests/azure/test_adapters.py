"""What the Azure adapters add to the contract: error translation, large documents, key checks.

Outages are played by a small local HTTP server (a fake Table endpoint on 127.0.0.1) that answers
every request the same way, so the translation of each failure is observed on real SDK calls.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.data.tables import TableServiceClient

from modelrepo.adapters.azure import AzureStorage, AzureTableMetadataStore
from modelrepo.errors import ConditionFailed, OutcomeUnknown, StorageError, Throttled
from modelrepo.ports import Delete, Put
from tests.fixtures.azure import ACCOUNT, KEY, unique_name

P = "exp~adapter"


class FakeTables(ThreadingHTTPServer):
    """Answers every request with `status`/`code`, or drops the connection when status is 0."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status, self.code, self.requests = 503, "ServerBusy", 0

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.server_address[1]}/{ACCOUNT};"
        )


class _Handler(BaseHTTPRequestHandler):
    server: FakeTables

    def do_GET(self) -> None:
        self.server.requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.status == 0:
            self.connection.shutdown(socket.SHUT_RDWR)  # no answer at all
            return
        body = json.dumps({"odata.error": {"code": self.server.code, "message": {"value": "fake"}}}).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-ms-error-code", self.server.code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_MERGE = do_GET  # noqa: N815

    def log_message(self, message: str, *args: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[FakeTables]:
    server = FakeTables()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def store_on(fake: FakeTables, **options: float) -> AzureTableMetadataStore:
    service = TableServiceClient.from_connection_string(
        fake.connection_string, retry_backoff_factor=0.01, retry_backoff_max=0.05, **options
    )
    return AzureTableMetadataStore(service.get_table_client("t"))


WRITE = [Put(P, "counter", {"n": 1}, if_absent=True), Put(P, "ver~1", {"v": 1}, if_absent=True)]


def test_a_busy_service_is_throttled_after_the_sdk_retried_reads(fake: FakeTables) -> None:
    store = store_on(fake, retry_total=2)
    with pytest.raises(Throttled):
        store.get(P, "counter")
    assert fake.requests == 3  # the SDK's own retry policy: one try and two retries
    with pytest.raises(Throttled):
        store.query(P, "ver~", limit=5)


def test_writes_go_out_once_so_a_commit_behind_a_failure_is_never_hidden(fake: FakeTables) -> None:
    store = store_on(fake, retry_total=4)
    with pytest.raises(Throttled):  # 503 ServerBusy: refused, nothing applied
        store.transact(WRITE)
    assert fake.requests == 1
    fake.status, fake.code = 500, "OperationTimedOut"  # "may or may not have succeeded"
    with pytest.raises(OutcomeUnknown):
        store.transact(WRITE)
    fake.status = 0  # the connection drops before any answer
    with pytest.raises(OutcomeUnknown):
        store.transact(WRITE)
    assert fake.requests == 3


def test_an_unreachable_service_is_throttled_and_a_refusal_is_a_storage_error(fake: FakeTables) -> None:
    fake.status, fake.code = 403, "AuthorizationPermissionMismatch"
    with pytest.raises(StorageError, match="403") as refused:
        store_on(fake, retry_total=0).transact(WRITE)
    assert type(refused.value) is StorageError
    port = fake.server_address[1]
    fake.shutdown()
    fake.server_close()
    closed = TableServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"TableEndpoint=http://127.0.0.1:{port}/{ACCOUNT};",
        retry_total=0,
    )
    with pytest.raises(Throttled):
        AzureTableMetadataStore(closed.get_table_client("t")).transact(WRITE)


def test_a_missing_table_is_a_storage_error_not_a_lost_race(azure_storage: AzureStorage) -> None:
    store = AzureTableMetadataStore(azure_storage.tables.get_table_client(unique_name("t")))
    with pytest.raises(StorageError) as read:
        store.get(P, "counter")
    with pytest.raises(StorageError) as written:
        store.transact(WRITE)
    assert not isinstance(read.value, ConditionFailed) and not isinstance(written.value, ConditionFailed)


def test_documents_larger_than_one_table_property_round_trip(azure_storage: AzureStorage) -> None:
    store = AzureTableMetadataStore(azure_storage.tables.create_table(unique_name("t")))
    document = {"description": "模型 ñ 🚀 " * 12_000, "tags": {f"k{n}": "v" * 512 for n in range(50)}}
    store.transact([Put(P, "big", document, if_absent=True)])
    item = store.get(P, "big")
    assert item is not None and item.data == document
    store.transact([Put(P, "big", {"small": True}, if_match=item.etag)])  # replacing drops the old chunks
    assert store.get(P, "big").data == {"small": True}  # type: ignore[union-attr]
    store.transact([Delete(P, "missing")])  # deleting a missing row unconditionally is fine


def test_keys_outside_the_cores_alphabet_are_refused(azure_storage: AzureStorage) -> None:
    store = AzureTableMetadataStore(azure_storage.tables.create_table(unique_name("t")))
    for bad in ("a/b", "a\\b", "a#b", "a?b", "tab\t", ""):
        with pytest.raises(ValueError):
            store.transact([Put(P, bad, {}, if_absent=True)])
        with pytest.raises(ValueError):
            store.get(P, bad)
