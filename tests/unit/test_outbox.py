"""Events out: every change is a CloudEvent in the same atomic write, gapless per partition, and the
dispatcher delivers each partition's events in order, at least once, from a resumable cursor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from modelrepo import outbox, tables
from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.dispatch import DeliveryFailed, Dispatcher, parked_deliveries
from modelrepo.errors import Busy, ConditionFailed, InvalidInput
from modelrepo.outbox import CloudEvent
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.unit.conftest import EPOCH, FAST_RETRY, FaultyMetadataStore, concurrently, record


def registered(repo: ModelRepository, experiment: str = "exp1", versions: int = 1) -> str:
    artifact = record(repo, f"{experiment}/run-{experiment}/model.bin", b"weights").artifact
    assert artifact is not None
    for _ in range(versions):
        repo.register_model(experiment, artifact.run_artifact_id, "alice")
    return artifact.run_artifact_id


def all_events(repo: ModelRepository, experiment: str = "exp1") -> list[CloudEvent]:
    return list(repo.experiment_events(experiment, limit=1000).items)


def test_every_change_is_one_cloud_event_with_a_gapless_sequence(repo: ModelRepository) -> None:
    registered(repo, versions=2)
    repo.set_tag("exp1", 1, "stage", "candidate", "bob")
    repo.delete_tag("exp1", 1, "stage", "bob")
    repo.deploy("exp1", 1, "production", "carol")
    repo.deploy("exp1", 2, "production", "carol")
    repo.rollback("exp1", "production", "dave")
    events = all_events(repo)
    assert [(e.sequence, e.type, e.subject, e.actor) for e in events] == [
        (1, outbox.VERSION_REGISTERED, "experiments/exp1/versions/1", "alice"),
        (2, outbox.VERSION_REGISTERED, "experiments/exp1/versions/2", "alice"),
        (3, outbox.VERSION_TAGGED, "experiments/exp1/versions/1", "bob"),
        (4, outbox.VERSION_UNTAGGED, "experiments/exp1/versions/1", "bob"),
        (5, outbox.DEPLOYMENT_CREATED, "experiments/exp1/targets/production", "carol"),
        (6, outbox.DEPLOYMENT_CREATED, "experiments/exp1/targets/production", "carol"),
        (7, outbox.DEPLOYMENT_CREATED, "experiments/exp1/targets/production", "dave"),
    ]
    wire = events[2].to_json()
    assert wire["specversion"] == "1.0" and wire["datacontenttype"] == "application/json"
    assert wire["source"] == repo.context.source and wire["time"].endswith("Z")
    assert wire["data"] == repo.get_model("exp1", 1).model_copy(update={"tags": {"stage": "candidate"}}).to_json()
    assert len({e.id for e in events}) == len(events), "ids are unique"
    # The audit trail is read from the same rows: it can never disagree with the events.
    trail = repo.experiment_audit("exp1", limit=100).items
    assert [(a.sequence, a.actor, a.at) for a in trail] == [(e.sequence, e.actor, e.time) for e in events]


def test_artifact_events_count_per_run(repo: ModelRepository) -> None:
    record(repo, "exp1/run1/a.bin", b"a")
    record(repo, "exp2/run1/b.bin", b"b")
    record(repo, "exp1/run2/c.bin", b"c")
    run1 = repo.run_events("run1").items
    assert [(e.sequence, e.type) for e in run1] == [(1, outbox.ARTIFACT_RECORDED), (2, outbox.ARTIFACT_RECORDED)]
    assert run1[0].data["name"] == "a.bin" and run1[0].subject == f"runs/run1/artifacts/{run1[0].data['runArtifactId']}"
    assert [e.sequence for e in repo.run_events("run2").items] == [1]


def test_concurrent_registrations_and_tags_get_each_sequence_exactly_once(repo: ModelRepository) -> None:
    artifact_id = registered(repo)

    def work(n: int) -> object:
        if n % 4 == 3:
            return repo.set_tag("exp1", 1, f"k{n}", "v", "bob")
        return repo.register_model("exp1", artifact_id, f"user{n}")

    results = concurrently(40, work)
    assert not [r for r in results if isinstance(r, Exception)]
    events = all_events(repo)
    assert [e.sequence for e in events] == list(range(1, 42))
    assert sum(e.type == outbox.VERSION_REGISTERED for e in events) == 31
    assert sum(e.type == outbox.VERSION_TAGGED for e in events) == 10


def test_events_page_with_one_bounded_query_each(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    registered(repo, versions=25)
    store.queries.clear()
    first = repo.experiment_events("exp1", after=0, limit=10)
    second = repo.experiment_events("exp1", after=int(first.next_cursor or 0), limit=10)
    third = repo.experiment_events("exp1", after=int(second.next_cursor or 0), limit=10)
    assert [e.sequence for e in first.items + second.items + third.items] == list(range(1, 26))
    assert (first.next_cursor, second.next_cursor, third.next_cursor) == ("10", "20", None)
    assert [q[1] for q in store.queries] == [tables.EVENT_PREFIX] * 3
    assert repo.experiment_events("exp1", after=25).items == []
    with pytest.raises(InvalidInput):
        repo.experiment_events("exp1", after=-1)


def test_a_refused_change_leaves_no_event(artifacts: MemoryArtifactStore) -> None:
    store = FaultyMetadataStore()
    repo = ModelRepository(artifacts, store, retry=FAST_RETRY)
    registered(repo)

    def refuse_tag_writes(writes: Sequence[Write], inner: MetadataStore) -> None:
        if any(w.row.startswith(tables.VERSION_PREFIX) for w in writes):
            raise ConditionFailed("someone else changed it")  # every attempt loses: nothing may be written
        inner.transact(writes)

    store.fault = refuse_tag_writes
    clock = iter(range(1000))
    repo.context.retry = RetryPolicy(deadline_seconds=5, sleep=lambda _s: None, clock=lambda: float(next(clock)))
    with pytest.raises(Busy, match="contended"):
        repo.set_tag("exp1", 1, "stage", "x", "bob")
    assert [e.sequence for e in all_events(repo)] == [1]


# --- the dispatcher --------------------------------------------------------------------------------


@dataclass
class Recorder:
    """A publisher that keeps what it was sent, and fails when told to."""

    subscriber: str = "test-subscriber"
    received: list[CloudEvent] = field(default_factory=list)
    failing: bool = False
    calls: int = 0

    def publish(self, events: Sequence[CloudEvent]) -> None:
        self.calls += 1
        if self.failing:
            raise DeliveryFailed("the receiver answered 503")
        self.received.extend(events)


def test_the_dispatcher_delivers_each_partition_in_order_and_moves_its_cursor(repo: ModelRepository) -> None:
    registered(repo, "exp1", versions=3)
    registered(repo, "exp2", versions=2)
    recorder = Recorder()
    dispatcher = Dispatcher(repo.metadata, recorder, batch=2)
    assert dispatcher.sweep() == 5 + 2  # five versions and two artifact events
    by_subject: dict[str, list[int]] = {}
    for event in recorder.received:
        by_subject.setdefault(event.subject.split("/")[1], []).append(event.sequence)
    assert by_subject == {"exp1": [1, 2, 3], "exp2": [1, 2], "run-exp1": [1], "run-exp2": [1]}
    assert dispatcher.position(tables.experiment_partition("exp1")) == 3
    assert dispatcher.sweep() == 0, "nothing is delivered twice once accepted"
    repo.set_tag("exp1", 2, "k", "v", "bob")
    assert dispatcher.drain(tables.experiment_partition("exp1")) == 1
    assert recorder.received[-1].sequence == 4


def test_a_crash_between_publishing_and_moving_the_cursor_delivers_again_never_less(
    repo: ModelRepository,
) -> None:
    registered(repo, versions=3)
    recorder = Recorder()
    dispatcher = Dispatcher(repo.metadata, recorder)
    partition = tables.experiment_partition("exp1")
    original = dispatcher._advance
    dispatcher._advance = lambda *args: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        dispatcher.drain(partition)
    dispatcher._advance = original  # type: ignore[method-assign]
    dispatcher.drain(partition)
    ids = [e.id for e in recorder.received]
    assert [e.sequence for e in recorder.received] == [1, 2, 3, 1, 2, 3]
    assert ids[:3] == ids[3:], "a redelivery carries the same ids"


def test_a_failing_subscriber_parks_the_partition_keeps_its_order_and_resumes(repo: ModelRepository) -> None:
    registered(repo, "exp1", versions=2)
    registered(repo, "exp2", versions=1)
    clock = [EPOCH]
    recorder = Recorder(failing=True)
    dispatcher = Dispatcher(repo.metadata, recorder, now=lambda: clock[0])
    exp1 = tables.experiment_partition("exp1")
    assert dispatcher.drain(exp1) == 0
    [parked] = parked_deliveries(repo.metadata)
    assert (parked.partition, parked.sequence, parked.attempts) == (exp1, 1, 1)
    assert "503" in parked.error
    calls = recorder.calls
    assert dispatcher.drain(exp1) == 0 and recorder.calls == calls, "a parked partition waits for its pause"
    recorder.failing = False
    assert dispatcher.drain(tables.experiment_partition("exp2")) == 1, "other partitions keep flowing"
    clock[0] += timedelta(seconds=5)
    assert dispatcher.drain(exp1) == 2
    assert [e.sequence for e in recorder.received if e.subject.startswith("experiments/exp1")] == [1, 2]
    assert parked_deliveries(repo.metadata) == []


def test_a_forced_drain_retries_a_parked_partition_at_once(repo: ModelRepository) -> None:
    registered(repo, versions=1)
    recorder = Recorder(failing=True)
    dispatcher = Dispatcher(repo.metadata, recorder)
    partition = tables.experiment_partition("exp1")
    dispatcher.drain(partition)
    recorder.failing = False
    assert dispatcher.drain(partition, force=True) == 1


def test_two_dispatchers_of_one_subscriber_never_move_the_cursor_back() -> None:
    repo = ModelRepository(MemoryArtifactStore(), MemoryMetadataStore(), retry=FAST_RETRY)
    registered(repo, versions=30)
    first, second = Recorder(), Recorder()
    partition = tables.experiment_partition("exp1")
    dispatchers = [Dispatcher(repo.metadata, first, batch=3), Dispatcher(repo.metadata, second, batch=3)]
    concurrently(2, lambda n: dispatchers[n].drain(partition))
    assert dispatchers[0].position(partition) == 30
    delivered = {e.sequence for e in first.received} | {e.sequence for e in second.received}
    assert delivered == set(range(1, 31))
