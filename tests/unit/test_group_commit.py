"""Group commit: concurrent registrations of one experiment share a conditional write, and each
still gets exactly its own answer."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.batching import GroupCommit, Ticket
from modelrepo.errors import Busy, Conflict
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.fixtures.faults import FaultyMetadataStore
from tests.unit.conftest import FAST_RETRY, concurrently, record


def slow_writes(seconds: float) -> Callable[[Sequence[Write], MetadataStore], None]:
    def fault(writes: Sequence[Write], inner: MetadataStore) -> None:
        time.sleep(seconds)  # a slow backend lets the queue fill up behind the leader
        inner.transact(writes)

    return fault


def test_concurrent_registrations_share_transactions(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = slow_writes(0.02)
    before = store.transactions
    results = concurrently(32, lambda i: repo.register_model("exp1", artifact.run_artifact_id, f"user{i}"))
    versions = sorted(r.version for r in results)
    assert versions == list(range(1, 33))
    assert store.transactions - before < 32  # batched, not one transaction each
    by_user = {m.registered_by: m.version for m in repo.list_models("exp1", limit=100).items}
    assert by_user == {r.registered_by: r.version for r in results}


def test_a_reused_idempotency_key_fails_only_its_own_request(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    a = record(repo, "exp1/run1/a.bin", b"a").artifact
    b = record(repo, "exp1/run1/b.bin", b"b").artifact
    assert a is not None and b is not None
    repo.register_model("exp1", a.run_artifact_id, "first", idempotency_key="taken")
    store.fault = slow_writes(0.02)

    def register(i: int) -> object:
        if i == 0:  # the key was used for artifact a: for artifact b it is a conflict
            return repo.register_model("exp1", b.run_artifact_id, "reuser", idempotency_key="taken")
        return repo.register_model("exp1", b.run_artifact_id, f"user{i}")

    results = concurrently(12, register)
    assert isinstance(results[0], Conflict)
    assert sorted(r.version for r in results[1:]) == list(range(2, 13))


def test_same_key_twice_in_one_burst_registers_once(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = slow_writes(0.02)
    results = concurrently(
        10, lambda i: repo.register_model("exp1", artifact.run_artifact_id, "u", idempotency_key=f"k{i % 2}")
    )
    assert {r.version for r in results} == {1, 2}
    assert len(repo.list_models("exp1").items) == 2


def test_a_request_queued_past_its_patience_gives_up_with_busy(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=RetryPolicy(deadline_seconds=0.3))
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = slow_writes(0.5)
    results = concurrently(30, lambda i: repo.register_model("exp1", artifact.run_artifact_id, f"u{i}"))
    busy = [r for r in results if isinstance(r, Busy)]
    done = [r for r in results if not isinstance(r, Exception)]
    assert busy and done
    assert sorted(m.version for m in repo.list_models("exp1", limit=100).items) == list(range(1, len(done) + 1))


def test_an_unexpected_error_in_a_batch_reaches_every_request_of_it() -> None:
    def take(queue: deque[Ticket[int, int]]) -> list[Ticket[int, int]]:
        batch = list(queue)
        queue.clear()
        return batch

    def commit(batch: list[Ticket[int, int]]) -> None:
        time.sleep(0.05)
        raise RuntimeError("the disk is gone")

    group: GroupCommit[int, int] = GroupCommit(take, commit, lambda: Busy("queued too long"), patience=5)
    results = concurrently(8, group.submit)
    assert all(isinstance(r, RuntimeError) for r in results), results


def test_requests_are_answered_in_arrival_order_batches() -> None:
    committed: list[list[int]] = []

    def take(queue: deque[Ticket[int, int]]) -> list[Ticket[int, int]]:
        return [queue.popleft() for _ in range(min(3, len(queue)))]

    def commit(batch: list[Ticket[int, int]]) -> None:
        committed.append([t.payload for t in batch])
        time.sleep(0.01)
        for ticket in batch:
            ticket.resolve(ticket.payload * 10)

    group: GroupCommit[int, int] = GroupCommit(take, commit, lambda: Busy("queued too long"), patience=5)
    assert concurrently(9, group.submit) == [i * 10 for i in range(9)]
    assert all(len(batch) <= 3 for batch in committed)
    assert sorted(p for batch in committed for p in batch) == list(range(9))


@pytest.mark.parametrize("writers", [1, 4])
def test_batches_never_exceed_one_transaction(artifacts: MemoryArtifactStore, writers: int) -> None:
    from modelrepo.ports import MAX_WRITES_PER_TRANSACTION

    sizes: list[int] = []

    def measure(writes: Sequence[Write], inner: MetadataStore) -> None:
        sizes.append(len(writes))
        time.sleep(0.005)
        inner.transact(writes)

    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = measure
    concurrently(
        80 * writers,
        lambda i: repo.register_model("exp1", artifact.run_artifact_id, "u", idempotency_key=f"key-{i}"),
    )
    assert max(sizes) <= MAX_WRITES_PER_TRANSACTION
    assert len(repo.list_models("exp1", limit=1000).items) == 80 * writers
