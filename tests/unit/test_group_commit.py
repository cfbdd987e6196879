"""Group commit: concurrent registrations of one experiment share a conditional write, and each
still gets exactly its own answer.

No test here waits for a sleep to fill the queue: `batching.wait_for_turn` is replaced by
`WaitingRoom`, which knows how many requests are waiting, so the first commit is held until the
queue is provably full, and a request's patience runs out on cue rather than on the wall clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from modelrepo import batching, tables
from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.batching import GroupCommit, Ticket
from modelrepo.errors import Busy, Conflict
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.fixtures.faults import FaultyMetadataStore
from tests.unit.conftest import FAST_RETRY, concurrently, record

BOUND = 60.0  # seconds: only a hung test ever waits this long; it then fails instead of hanging


class WaitingRoom:
    """Stands in for `batching.wait_for_turn`: counts the requests waiting for their turn, and
    runs out the patience of those waiting when told to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._changed = threading.Condition()
        self._waiting: set[batching.Wake] = set()
        self._ran_out: set[batching.Wake] = set()
        self.patience: list[float] = []
        monkeypatch.setattr(batching, "wait_for_turn", self.wait)

    def wait(self, wake: batching.Wake, patience: float) -> bool:
        with self._changed:
            self.patience.append(patience)
            self._waiting.add(wake)
            self._changed.notify_all()
        woken = wake.wait(BOUND)
        with self._changed:
            self._waiting.discard(wake)
            ran_out = wake in self._ran_out
            self._ran_out.discard(wake)
        assert woken, "a queued request was never woken"
        return not ran_out

    def until(self, count: int) -> None:
        """Block until `count` requests wait for their turn."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self._waiting) >= count, BOUND), (
                f"only {len(self._waiting)} of {count} requests ever queued"
            )

    def run_out_patience(self) -> int:
        """Every request waiting now finds its patience gone; answers how many there were."""
        with self._changed:
            waiting = list(self._waiting)
            self._ran_out.update(waiting)
        for wake in waiting:
            wake.set()
        return len(waiting)


def registers(writes: Sequence[Write]) -> bool:
    """Whether a transaction registers versions (not a pin's lease or an index row before it)."""
    return any(w.row.startswith(tables.VERSION_PREFIX) for w in writes)


def first_write_held_until(room: WaitingRoom, queued: int) -> Callable[[Sequence[Write], MetadataStore], None]:
    """A store fault: the first registration's transaction (the first that writes a version row;
    a pin's lease and the experiment's index row come before it) waits until `queued` requests wait
    behind it."""
    held = threading.Event()

    def fault(writes: Sequence[Write], inner: MetadataStore) -> None:
        if not held.is_set() and registers(writes):
            held.set()
            room.until(queued)
        inner.transact(writes)

    return fault


def test_concurrent_registrations_share_transactions(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = first_write_held_until(WaitingRoom(monkeypatch), queued=31)
    results = concurrently(32, lambda i: repo.register_model("exp1", artifact.run_artifact_id, f"user{i}"))
    versions = sorted(r.version for r in results)
    assert versions == list(range(1, 33))
    # The first registration, then everyone who queued behind it in one: batched, not one each.
    registrations = [w for w in store.written if any(r.startswith(tables.VERSION_PREFIX) for r in w)]
    assert len(registrations) == 2
    by_user = {m.registered_by: m.version for m in repo.list_models("exp1", limit=100).items}
    assert by_user == {r.registered_by: r.version for r in results}


def test_a_reused_idempotency_key_fails_only_its_own_request(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    a = record(repo, "exp1/run1/a.bin", b"a").artifact
    b = record(repo, "exp1/run1/b.bin", b"b").artifact
    assert a is not None and b is not None
    repo.register_model("exp1", a.run_artifact_id, "first", idempotency_key="taken")
    # Ten queue behind the first writer; the reuser is refused before it queues.
    store.fault = first_write_held_until(WaitingRoom(monkeypatch), queued=10)

    def register(i: int) -> object:
        if i == 0:  # the key was used for artifact a: for artifact b it is a conflict
            return repo.register_model("exp1", b.run_artifact_id, "reuser", idempotency_key="taken")
        return repo.register_model("exp1", b.run_artifact_id, f"user{i}")

    results = concurrently(12, register)
    assert isinstance(results[0], Conflict)
    assert sorted(r.version for r in results[1:]) == list(range(2, 13))


def test_same_key_twice_in_one_burst_registers_once(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    store.fault = first_write_held_until(WaitingRoom(monkeypatch), queued=9)
    results = concurrently(
        10, lambda i: repo.register_model("exp1", artifact.run_artifact_id, "u", idempotency_key=f"k{i % 2}")
    )
    assert {r.version for r in results} == {1, 2}
    assert len(repo.list_models("exp1").items) == 2


def test_a_request_queued_past_its_patience_gives_up_with_busy(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FaultyMetadataStore()
    policy = RetryPolicy(deadline_seconds=7.5)
    repo = ModelRepository(artifacts, store, retry=policy)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    room = WaitingRoom(monkeypatch)
    writing, release = threading.Event(), threading.Event()

    def slow_first_write(writes: Sequence[Write], inner: MetadataStore) -> None:
        if not writing.is_set() and registers(writes):
            writing.set()
            assert release.wait(BOUND)
        inner.transact(writes)

    store.fault = slow_first_write

    def register(user: str) -> object:
        return repo.register_model("exp1", artifact.run_artifact_id, user)

    with ThreadPoolExecutor(30) as pool:
        leader = pool.submit(register, "u0")
        assert writing.wait(BOUND)  # u0 leads and is writing: everyone else queues behind it
        queued = [pool.submit(register, f"u{i}") for i in range(1, 30)]
        room.until(29)
        assert room.run_out_patience() == 29  # the clock passes their patience while u0 still writes
        gave_up = [future.exception(BOUND) for future in queued]
        release.set()
        first = leader.result(BOUND)

    assert all(isinstance(error, Busy) for error in gave_up), gave_up
    assert set(room.patience) == {policy.deadline_seconds}, "a queued request is as patient as the deadline"
    assert first.version == 1  # type: ignore[attr-defined]
    assert [m.version for m in repo.list_models("exp1", limit=100).items] == [1], "nothing of the others written"


def test_an_unexpected_error_in_a_batch_reaches_every_request_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    room = WaitingRoom(monkeypatch)
    sizes: list[int] = []

    def take(queue: deque[Ticket[int, int]]) -> list[Ticket[int, int]]:
        batch = list(queue)
        queue.clear()
        return batch

    def commit(batch: list[Ticket[int, int]]) -> None:
        if not sizes:
            room.until(7)  # the other seven queue behind the first batch
        sizes.append(len(batch))
        raise RuntimeError("the disk is gone")

    group: GroupCommit[int, int] = GroupCommit(take, commit, lambda: Busy("queued too long"), patience=5)
    results = concurrently(8, group.submit)
    assert all(isinstance(r, RuntimeError) for r in results), results
    assert sum(sizes) == 8 and max(sizes) > 1, sizes  # a batch of several, every one of them told


def test_requests_are_answered_in_arrival_order_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    room = WaitingRoom(monkeypatch)
    committed: list[list[int]] = []

    def take(queue: deque[Ticket[int, int]]) -> list[Ticket[int, int]]:
        return [queue.popleft() for _ in range(min(3, len(queue)))]

    def commit(batch: list[Ticket[int, int]]) -> None:
        if not committed:
            room.until(8)  # the other eight queue behind the first batch
        committed.append([t.payload for t in batch])
        for ticket in batch:
            ticket.resolve(ticket.payload * 10)

    group: GroupCommit[int, int] = GroupCommit(take, commit, lambda: Busy("queued too long"), patience=5)
    assert concurrently(9, group.submit) == [i * 10 for i in range(9)]
    # Whatever the first batch held, the rest were all queued: full batches of three, then the rest.
    assert max(len(batch) for batch in committed) == 3 and len(committed) <= 4, committed
    assert sorted(p for batch in committed for p in batch) == list(range(9))


@pytest.mark.parametrize("writers", [1, 4])
def test_batches_never_exceed_one_transaction(
    artifacts: MemoryArtifactStore, monkeypatch: pytest.MonkeyPatch, writers: int
) -> None:
    from modelrepo.ports import MAX_WRITES_PER_TRANSACTION

    room = WaitingRoom(monkeypatch)
    sizes: list[int] = []

    def measure(writes: Sequence[Write], inner: MetadataStore) -> None:
        if registers(writes):
            if not sizes:
                room.until(80 * writers - 1)  # everyone else queues behind the first registration
            sizes.append(len(writes))
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
    assert max(sizes) == MAX_WRITES_PER_TRANSACTION, "full batches, and none larger than one transaction"
    assert len(repo.list_models("exp1", limit=1000).items) == 80 * writers
