"""What only the AWS adapters do: SDK errors → the core's errors, lost answers, throttling, large pins.

Faults are injected by a small HTTP proxy in front of the moto server (`tests/aws/fault_proxy.py`)
that can withhold an answer (after moto has applied the write) or answer with DynamoDB's
throttling error.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from modelrepo import tables
from modelrepo.adapters.aws import DynamoDBMetadataStore, S3ArtifactStore
from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import ConditionFailed, ObjectChanged, OutcomeUnknown, StorageError, Throttled
from modelrepo.events import ObjectCreated
from modelrepo.ports import Put
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.aws.fault_proxy import FaultyProxy, running_proxy
from tests.aws.sdk_faults import PROVISIONED_THROUGHPUT, SdkFaults
from tests.fixtures.aws import aws_client, create_bucket, create_table

P = "exp~adapters"


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultyProxy]:
    with running_proxy(moto_endpoint) as server:
        yield server


def proxied_store(proxy: FaultyProxy, moto_endpoint: str, **config: Any) -> DynamoDBMetadataStore:
    table = create_table(moto_endpoint)
    return DynamoDBMetadataStore(aws_client("dynamodb", proxy.url, read_timeout=0.3, **config), table)


def test_a_write_whose_answer_is_lost_is_outcome_unknown(proxy: FaultyProxy, moto_endpoint: str) -> None:
    store = proxied_store(proxy, moto_endpoint, total_attempts=1)
    proxy.withhold["TransactWriteItems"] = 1
    with pytest.raises(OutcomeUnknown):
        store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    item = store.get(P, "row")
    assert item is not None and item.data == {"v": 1}, "the write did commit"


def test_a_registration_whose_answer_is_lost_is_recognised_as_ours(proxy: FaultyProxy, moto_endpoint: str) -> None:
    """Without botocore retries (moto ignores ClientRequestToken), so the core's token must do it."""
    store = proxied_store(proxy, moto_endpoint, total_attempts=1)
    artifacts = MemoryArtifactStore()
    repository = ModelRepository(artifacts, store, retry=RetryPolicy(deadline_seconds=10))
    info = artifacts.put("exp1/run1/model.bin", io.BytesIO(b"weights"))
    recorded = repository.record_artifact(ObjectCreated.from_object(info, "test"))
    assert recorded.artifact is not None

    proxy.withhold["TransactWriteItems"] = 1
    model = repository.register_model("exp1", recorded.artifact.run_artifact_id, "alice")

    assert model.version == 1
    partition = tables.experiment_partition("exp1")
    assert [i.data["model"]["version"] for i in store.query(partition, tables.VERSION_PREFIX)] == [1]
    counter = store.get(partition, tables.COUNTER_ROW)
    assert counter is not None and (counter.data["latest"], counter.data["sequence"]) == (1, 1)
    assert repository.register_model("exp1", recorded.artifact.run_artifact_id, "bob").version == 2


def test_a_refusal_after_a_lost_answer_is_still_outcome_unknown(proxy: FaultyProxy, moto_endpoint: str) -> None:
    """Attempt 1 commits but its answer is lost; botocore's retries are throttled. Reporting
    Throttled would tell the core that nothing was written, and it would register twice."""
    store = proxied_store(proxy, moto_endpoint, total_attempts=3)
    proxy.withhold["TransactWriteItems"] = 1
    calls = iter([None, PROVISIONED_THROUGHPUT, PROVISIONED_THROUGHPUT])
    with (
        SdkFaults(
            store._client, lambda operation, _token: next(calls) if operation == "TransactWriteItems" else None
        ).installed(),
        pytest.raises(OutcomeUnknown),
    ):
        store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    item = store.get(P, "row")
    assert item is not None and item.data == {"v": 1}, "the first attempt did commit"
    with pytest.raises(ConditionFailed):  # an ordinary refusal, with nothing lost, stays what it is
        store.transact([Put(P, "row", {"v": 2}, if_absent=True)])


def test_throttling_is_retried_by_botocore_then_by_the_core(proxy: FaultyProxy, moto_endpoint: str) -> None:
    store = proxied_store(proxy, moto_endpoint, total_attempts=2)
    proxy.throttle["TransactWriteItems"] = 2
    with pytest.raises(Throttled):
        store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    assert proxy.seen.count("TransactWriteItems") == 2, "botocore retried once, then gave up"
    assert store.get(P, "row") is None, "nothing partial"

    artifacts = MemoryArtifactStore()
    repository = ModelRepository(artifacts, store, retry=RetryPolicy(deadline_seconds=10))
    info = artifacts.put("exp1/run1/model.bin", io.BytesIO(b"weights"))
    recorded = repository.record_artifact(ObjectCreated.from_object(info, "test"))
    assert recorded.artifact is not None
    proxy.throttle["TransactWriteItems"] = 5  # outlasts botocore twice; the core's backoff goes on
    model = repository.register_model("exp1", recorded.artifact.run_artifact_id, "alice")
    assert model.version == 1
    assert proxy.throttle["TransactWriteItems"] == 0
    assert len(store.query(tables.experiment_partition("exp1"), tables.VERSION_PREFIX)) == 1


@pytest.mark.parametrize(
    ("code", "fields", "expected"),
    [
        ("TransactionCanceledException", [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}], ConditionFailed),
        ("TransactionCanceledException", [{"Code": "TransactionConflict"}, {"Code": "None"}], Throttled),
        ("TransactionCanceledException", [{"Code": "ThrottlingError"}], Throttled),
        ("TransactionCanceledException", [{"Code": "ValidationError"}], StorageError),
        ("ProvisionedThroughputExceededException", None, Throttled),
        ("InternalServerError", None, OutcomeUnknown),
        ("TransactionInProgressException", None, OutcomeUnknown),
        ("ResourceNotFoundException", None, StorageError),
    ],
)
def test_dynamodb_errors_become_the_cores(
    aws_environment: dict[str, str], code: str, fields: list[dict[str, str]] | None, expected: type[Exception]
) -> None:
    client = aws_client("dynamodb", "http://127.0.0.1:9")  # never reached: the stubber answers
    store = DynamoDBMetadataStore(client, "table")
    with Stubber(client) as stub:
        stub.add_client_error(
            "transact_write_items",
            service_error_code=code,
            http_status_code=400,
            modeled_fields={"CancellationReasons": fields} if fields else None,
        )
        with pytest.raises(StorageError) as raised:
            store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    assert type(raised.value) is expected


def test_pinning_a_large_upload_copies_it_in_parts(moto_endpoint: str) -> None:
    chunk = 5 * 1024 * 1024
    store = S3ArtifactStore(
        aws_client("s3", moto_endpoint),
        create_bucket(moto_endpoint),
        create_bucket(moto_endpoint),
        multipart_threshold=chunk,
        multipart_chunk=chunk,
    )
    data = os.urandom(2 * chunk + 123)
    info = store.put("exp1/run1/large.bin", io.BytesIO(data))
    assert info.etag.endswith("-3"), "uploaded in three parts"
    digest = hashlib.sha256(data).hexdigest()
    store.pin(info.key, etag=info.etag, digest=digest)
    with store.open_pinned(digest) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == digest

    replaced = store.put("exp1/run1/large.bin", io.BytesIO(os.urandom(2 * chunk)))
    assert replaced.etag != info.etag
    with pytest.raises(ObjectChanged):
        store.pin(info.key, etag=info.etag, digest="0" * 64)
    assert not store.has_pinned("0" * 64)


def test_listing_reports_what_s3_holds(moto_endpoint: str) -> None:
    store = S3ArtifactStore(aws_client("s3", moto_endpoint), create_bucket(moto_endpoint), create_bucket(moto_endpoint))
    before = datetime.now(UTC).replace(microsecond=0)
    info = store.put("exp1/run1/a.bin", io.BytesIO(b"abc"))
    [listed] = store.list("exp1/").objects
    assert (listed.key, listed.size, listed.etag) == ("exp1/run1/a.bin", 3, info.etag)
    assert listed.modified_at >= before
    assert listed.etag == hashlib.md5(b"abc").hexdigest()
