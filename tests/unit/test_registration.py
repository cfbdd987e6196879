"""Rules 2 and 3: gapless optimistic versioning, idempotency, pinned bytes."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import pytest

from modelrepo import collect, tables
from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.errors import Busy, ConditionFailed, Conflict, InvalidInput, NotFound, Throttled, Unprocessable
from modelrepo.model import RunArtifact
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.unit.conftest import EPOCH, FAST_RETRY, FaultyMetadataStore, commit_then_lose_answer, concurrently, record

KEY = "exp1/run1/model.bin"


def recorded(repo: ModelRepository, data: bytes = b"weights", key: str = KEY) -> RunArtifact:
    artifact = record(repo, key, data).artifact
    assert artifact is not None
    return artifact


def versions(repo: ModelRepository, experiment: str = "exp1") -> list[int]:
    return [m.version for m in repo.list_models(experiment, limit=1000).items]


def test_versions_count_up_from_one(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    models = [repo.register_model("exp1", artifact.run_artifact_id, "alice") for _ in range(3)]
    assert [m.version for m in models] == [1, 2, 3]
    first = models[0]
    assert (first.run_artifact_id, first.run_id, first.artifact_name) == (artifact.run_artifact_id, "run1", "model.bin")
    assert (first.sha256, first.size, first.registered_by) == (artifact.sha256, artifact.size, "alice")
    assert versions(repo) == [3, 2, 1]


def test_concurrent_registrations_are_gapless_and_unique(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    results: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    def register() -> None:
        barrier.wait()
        model = repo.register_model("exp1", artifact.run_artifact_id, "alice")
        with lock:
            results.append(model.version)

    threads = [threading.Thread(target=register) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 33))
    assert versions(repo) == list(range(32, 0, -1))
    registered = [e for e in repo.experiment_audit("exp1", limit=1000).items if e.action == "model.registered"]
    assert len(registered) == 32


def test_experiments_count_independently(repo: ModelRepository) -> None:
    a = recorded(repo, b"a", "expA/run1/m.bin")
    b = recorded(repo, b"b", "expB/run2/m.bin")
    assert [repo.register_model("expA", a.run_artifact_id, "x").version for _ in range(2)] == [1, 2]
    assert repo.register_model("expB", b.run_artifact_id, "x").version == 1


def test_the_artifact_must_exist_and_belong_to_the_experiment(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    with pytest.raises(Unprocessable, match="belongs to experiment 'exp1', not 'exp2'"):
        repo.register_model("exp2", artifact.run_artifact_id, "alice")
    missing = tables.run_artifact_id("exp1", "run1", "other.bin", "etag")
    with pytest.raises(NotFound, match="is not recorded"):
        repo.register_model("exp1", missing, "alice")
    with pytest.raises(InvalidInput, match="malformed"):
        repo.register_model("exp1", "not-an-id", "alice")
    with pytest.raises(InvalidInput, match="actor"):
        repo.register_model("exp1", artifact.run_artifact_id, " ")
    assert versions(repo) == []
    assert versions(repo, "exp2") == []


def test_the_same_idempotency_key_returns_the_same_version(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    first = repo.register_model("exp1", artifact.run_artifact_id, "alice", idempotency_key="req-1")
    again = repo.register_model("exp1", artifact.run_artifact_id, "alice", idempotency_key="req-1")
    other = repo.register_model("exp1", artifact.run_artifact_id, "alice", idempotency_key="req-2")
    assert first == again
    assert (first.version, other.version) == (1, 2)
    assert versions(repo) == [2, 1]


def test_concurrent_retries_with_one_idempotency_key_register_once(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    results: list[int] = []
    barrier = threading.Barrier(16)

    def register() -> None:
        barrier.wait()
        results.append(repo.register_model("exp1", artifact.run_artifact_id, "a", idempotency_key="same").version)

    threads = [threading.Thread(target=register) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {1}
    assert versions(repo) == [1]


def test_an_idempotency_key_reused_for_another_artifact_is_a_conflict(repo: ModelRepository) -> None:
    a = recorded(repo, b"a", "exp1/run1/a.bin")
    b = recorded(repo, b"b", "exp1/run1/b.bin")
    repo.register_model("exp1", a.run_artifact_id, "alice", idempotency_key="k")
    with pytest.raises(Conflict, match="already used to register run artifact"):
        repo.register_model("exp1", b.run_artifact_id, "alice", idempotency_key="k")
    assert versions(repo) == [1]


def test_a_committed_write_whose_answer_was_lost_is_recognised(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = recorded(repo)
    store.fault = commit_then_lose_answer(times=1)
    model = repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert model.version == 1
    assert versions(repo) == [1]  # not registered twice
    store.fault = None
    assert repo.register_model("exp1", artifact.run_artifact_id, "alice").version == 2


def test_repeated_lost_answers_still_register_once(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = recorded(repo)
    store.fault = commit_then_lose_answer(times=3)
    assert repo.register_model("exp1", artifact.run_artifact_id, "alice", idempotency_key="k").version == 1
    assert versions(repo) == [1]


def test_throttling_is_retried_until_it_passes(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = recorded(repo)
    refusals = [4]

    def throttle(writes: Sequence[Write], inner: MetadataStore) -> None:
        if refusals[0]:
            refusals[0] -= 1
            raise Throttled("slow down")
        inner.transact(writes)

    store.fault = throttle
    before = store.transactions
    assert repo.register_model("exp1", artifact.run_artifact_id, "alice").version == 1
    # Four refusals, then the pin's lease, the experiment's index row (written before its first change)
    # and the registration.
    assert store.transactions - before == 7


def test_endless_contention_ends_in_busy_at_the_deadline_with_nothing_written(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    policy = RetryPolicy(base_seconds=0.01, cap_seconds=0.5, deadline_seconds=3.0, sleep=sleep, clock=lambda: clock[0])
    repo = ModelRepository(artifacts, store, retry=policy)
    artifact = recorded(repo)

    def always_lose(writes: Sequence[Write], inner: MetadataStore) -> None:
        raise ConditionFailed("someone else won")

    store.fault = always_lose
    with pytest.raises(Busy, match="retry") as busy:
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert busy.value.retry_after >= 1
    assert sum(slept) <= 3.0
    assert len(slept) >= 5  # it did retry
    assert max(slept) <= 0.5  # bounded by the cap
    assert len(set(slept)) == len(slept)  # jittered, not lockstep
    store.fault = None
    assert versions(repo) == []


def test_registered_bytes_survive_reupload_and_delete(repo: ModelRepository) -> None:
    artifact = recorded(repo, b"original weights")
    model = repo.register_model("exp1", artifact.run_artifact_id, "alice")
    record(repo, KEY, b"retrained, different weights")
    with repo.open_model("exp1", model.version) as (_, stream):
        assert stream.read() == b"original weights"
    repo.artifacts.delete(KEY)
    with repo.open_model("exp1", model.version) as (served, stream):
        assert stream.read() == b"original weights"
        assert served.sha256 == hashlib.sha256(b"original weights").hexdigest()


def test_registering_an_artifact_whose_object_was_overwritten_is_refused(repo: ModelRepository) -> None:
    artifact = recorded(repo, b"v1")
    record(repo, KEY, b"v2")
    with pytest.raises(Conflict, match="overwritten"):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert versions(repo) == []


def test_registering_an_artifact_whose_object_was_deleted_is_refused(repo: ModelRepository) -> None:
    artifact = recorded(repo, b"v1")
    repo.artifacts.delete(KEY)
    with pytest.raises(Conflict, match="deleted"):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert versions(repo) == []


def test_once_pinned_an_artifact_registers_again_without_its_source(repo: ModelRepository) -> None:
    artifact = recorded(repo, b"v1")
    repo.register_model("exp1", artifact.run_artifact_id, "alice")
    repo.artifacts.delete(KEY)
    assert repo.register_model("exp1", artifact.run_artifact_id, "bob").version == 2


class SlowCopyingArtifactStore(MemoryArtifactStore):
    """Counts copies into the registry, each slow enough for every other writer to arrive meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        self.copies += 1
        threading.Event().wait(0.05)
        super().pin(key, etag=etag, digest=digest)


def test_writers_registering_one_new_artifact_together_copy_it_once(metadata: MetadataStore) -> None:
    repo = ModelRepository(SlowCopyingArtifactStore(), metadata, retry=FAST_RETRY)
    artifact = recorded(repo)
    done = concurrently(16, lambda _: repo.register_model("exp1", artifact.run_artifact_id, "alice").version)
    assert sorted(done) == list(range(1, 17))
    assert isinstance(repo.artifacts, SlowCopyingArtifactStore) and repo.artifacts.copies == 1


class LeaseCountingMetadataStore(MemoryMetadataStore):
    """The in-memory store, noting every transaction that writes a pin lease row."""

    def __init__(self) -> None:
        super().__init__()
        self.lease_writes = 0

    def transact(self, writes: Sequence[Write]) -> None:
        super().transact(writes)
        self.lease_writes += sum(w.partition == collect.PINS_PARTITION for w in writes)


def test_hosts_registering_one_artifact_share_its_fresh_lease(artifacts: MemoryArtifactStore) -> None:
    """Each Lambda container or Functions worker holds its own repository: the second host reads
    the first one's lease and is bound by its time instead of racing every other host for the row."""
    clock = [EPOCH]
    metadata = LeaseCountingMetadataStore()
    hosts = [ModelRepository(artifacts, metadata, retry=FAST_RETRY, now=lambda: clock[0]) for _ in range(3)]
    artifact = recorded(hosts[0])
    assert [h.register_model("exp1", artifact.run_artifact_id, "alice").version for h in hosts] == [1, 2, 3]
    assert metadata.lease_writes == 1
    clock[0] += collect.LEASE / collect.SHARED  # too old to share: the next registration leases anew
    assert (
        ModelRepository(artifacts, metadata, retry=FAST_RETRY, now=lambda: clock[0])
        .register_model("exp1", artifact.run_artifact_id, "alice")
        .version
        == 4
    )
    assert metadata.lease_writes == 2


def test_bytes_that_do_not_match_the_recorded_digest_are_not_pinned(
    repo: ModelRepository, artifacts: MemoryArtifactStore
) -> None:
    artifact = recorded(repo, b"what was recorded")
    # The store serves other bytes under the same ETag (a corrupted or lying backend).
    artifacts.replace_raw(KEY, b"tampered bytes", etag=artifact.etag)
    with pytest.raises(Conflict, match="do not match the sha256"):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    assert not artifacts.has_pinned(artifact.sha256)
    assert versions(repo) == []


def test_listing_pages_newest_first_through_every_version(repo: ModelRepository) -> None:
    artifact = recorded(repo)
    for _ in range(25):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    seen: list[int] = []
    cursor = None
    while True:
        page = repo.list_models("exp1", limit=10, cursor=cursor)
        seen.extend(m.version for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(range(25, 0, -1))
    assert repo.latest_model("exp1").version == 25
    assert repo.get_model("exp1", 7).version == 7


def test_a_page_costs_one_bounded_query_whatever_the_total(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    artifact = recorded(repo)
    for _ in range(300):
        repo.register_model("exp1", artifact.run_artifact_id, "alice")
    store.queries.clear()
    page = repo.list_models("exp1", limit=20)
    assert store.queries == [("exp~exp1", tables.VERSION_PREFIX, 21)]
    store.queries.clear()
    repo.list_models("exp1", limit=20, cursor=page.next_cursor)
    assert store.queries == [("exp~exp1", tables.VERSION_PREFIX, 21)]


def test_unknown_versions_and_bad_arguments(repo: ModelRepository) -> None:
    with pytest.raises(NotFound, match="no registered versions"):
        repo.latest_model("exp1")
    with pytest.raises(NotFound, match="no version 4"):
        repo.get_model("exp1", 4)
    with pytest.raises(InvalidInput, match="version"):
        repo.get_model("exp1", 0)
    with pytest.raises(InvalidInput, match="limit"):
        repo.list_models("exp1", limit=0)
    with pytest.raises(InvalidInput, match="cursor"):
        repo.list_models("exp1", cursor="garbage!")
