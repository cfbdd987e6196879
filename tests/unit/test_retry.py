"""The retry policy's decisions, driven by a fake clock and scripted attempts.

No test sleeps: the policy's clock and sleep are one fake that only moves when told (an attempt
"takes" time by moving it, a wait moves it by the wait), and its random draw is replaced by one that
records the window it was asked to draw from and answers a fixed point of it. What is checked is
the window each wait is drawn from: how the policy sized it from what the attempts saw.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from modelrepo import tables
from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import Busy, ConditionFailed, Throttled
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import Attempt, Outcome, RetryPolicy, RoundTrip
from modelrepo.service import ModelRepository
from tests.unit.conftest import FaultyMetadataStore, record

MS = 0.001


@dataclass
class Script:
    """The fake time and randomness a policy runs on."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)
    point: float = 0.5  # where in each window the "random" draw lands

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def uniform(self, low: float, high: float) -> float:
        assert low == 0.0
        self.windows.append(high)
        return high * self.point

    def policy(self, **settings: Any) -> RetryPolicy:
        return replace(RetryPolicy(sleep=self.sleep, clock=self.clock, uniform=self.uniform), **settings)


def learned(script: Script, policy: RetryPolicy, seconds: float) -> None:
    """One uncommon call that commits at once after `seconds`: the process has timed a round trip."""
    attempt = next(policy.attempts("warming up"))
    script.now += seconds
    attempt.committed()


def registering_after_a_round_trip_of(seconds: float) -> tuple[Script, Iterator[Attempt]]:
    """A policy that draws at the top of each window and has timed one round trip of `seconds`."""
    script = Script(point=1.0)
    policy = script.policy(spread=1.0, queue_weight=1.0)
    learned(script, policy, seconds)
    return script, policy.attempts("registering")


def losing(script: Script, attempts: Iterator[Attempt], took: float, seen: int | None = None) -> Attempt:
    """The next attempt reads the counter at `seen` changes and loses after `took` seconds."""
    attempt = next(attempts)
    script.now += took
    attempt.lost(seen)
    return attempt


def test_a_first_loss_waits_within_about_one_round_trip_of_this_process() -> None:
    script = Script()
    policy = script.policy(spread=1.5)
    learned(script, policy, 10 * MS)
    attempts = policy.attempts("registering")
    losing(script, attempts, took=10 * MS, seen=7)
    next(attempts)
    # One other writer (the winner), a round trip of 10 ms, 1.5 round trips per contender.
    assert script.windows == [pytest.approx(15 * MS)]
    assert script.slept == [pytest.approx(7.5 * MS)]


def test_before_any_round_trip_was_timed_the_lost_attempt_is_the_sample() -> None:
    script = Script()
    attempts = script.policy(spread=1.5).attempts("registering")
    losing(script, attempts, took=20 * MS, seen=3)
    next(attempts)
    assert script.windows == [pytest.approx(30 * MS)]


def test_an_attempt_that_queued_behind_others_spreads_them_over_as_many_round_trips() -> None:
    script = Script()
    policy = script.policy(spread=1.5, queue_weight=2.0)
    learned(script, policy, 10 * MS)
    attempts = policy.attempts("registering")
    losing(script, attempts, took=100 * MS, seen=7)  # nine round trips spent waiting at the store
    next(attempts)
    # Each queued writer held the store for about half a round trip: 18 writers, 1.5 round trips each.
    assert script.windows == [pytest.approx(1.5 * 2 * 9 * 10 * MS)]


def test_commits_by_others_between_two_reads_shrink_the_next_window() -> None:
    script, attempts = registering_after_a_round_trip_of(10 * MS)
    losing(script, attempts, took=110 * MS, seen=10)  # ten writers queued ahead: a window of 100 ms
    # Read again after that wait: 2 others committed since, they are done; 8 are left.
    losing(script, attempts, took=10 * MS, seen=12)
    next(attempts)
    assert script.windows == [pytest.approx(100 * MS), pytest.approx((10 - 2) * 10 * MS)]


def test_the_queue_an_attempt_met_bounds_how_far_the_window_shrinks() -> None:
    script, attempts = registering_after_a_round_trip_of(10 * MS)
    losing(script, attempts, took=60 * MS, seen=10)  # 5 writers ahead: a window of 50 ms
    # 6 others committed since, but this attempt again queued behind 4: at least 4 are still writing.
    losing(script, attempts, took=50 * MS, seen=16)
    next(attempts)
    assert script.windows == [pytest.approx(50 * MS), pytest.approx(40 * MS)]


def test_the_estimate_never_falls_below_the_one_writer_that_won() -> None:
    script, attempts = registering_after_a_round_trip_of(10 * MS)
    losing(script, attempts, took=30 * MS, seen=10)  # 2 writers ahead: a window of 20 ms
    losing(script, attempts, took=10 * MS, seen=15)  # 5 committed since: more than it thought were left
    next(attempts)
    assert script.windows == [pytest.approx(20 * MS), pytest.approx(10 * MS)]


def test_losing_without_seeing_anything_doubles_the_window_up_to_the_cap() -> None:
    script = Script()
    policy = script.policy(spread=1.0, growth=2.0, cap_seconds=0.1)
    learned(script, policy, 10 * MS)
    attempts = policy.attempts("leasing")
    for _ in range(6):
        attempt = next(attempts)
        script.now += 10 * MS
        attempt.throttled()
    next(attempts)
    assert script.windows == pytest.approx([10 * MS, 20 * MS, 40 * MS, 80 * MS, 100 * MS, 100 * MS])


def test_a_wait_that_would_pass_the_deadline_ends_in_busy_without_sleeping() -> None:
    script = Script(point=1.0)
    policy = script.policy(spread=1.0, queue_weight=1.0, deadline_seconds=0.5)
    learned(script, policy, 10 * MS)
    attempts = policy.attempts("registering in exp~a")
    losing(script, attempts, took=30 * MS, seen=1)  # a window of 20 ms: waits
    with pytest.raises(Busy, match="registering in exp~a is still contended after 2 attempts") as busy:
        losing(script, attempts, took=470 * MS, seen=1)  # would end past the deadline
        next(attempts)
    assert busy.value.retry_after >= 1
    assert script.slept == [pytest.approx(20 * MS)]


def test_a_window_reaching_past_the_deadline_is_clamped_to_leave_one_more_round_trip() -> None:
    script = Script(point=1.0)
    policy = script.policy(spread=1.0, queue_weight=1.0, deadline_seconds=1.0)
    learned(script, policy, 10 * MS)
    attempts = policy.attempts("registering")
    losing(script, attempts, took=610 * MS, seen=1)  # 60 writers queued ahead: a window of 600 ms
    attempt = next(attempts)  # 390 ms are left: the slot is drawn from the first 380 of them
    assert script.windows == [pytest.approx(380 * MS)]
    assert script.slept == [pytest.approx(380 * MS)]
    assert attempt.number == 1


def test_the_round_trip_falls_fast_and_rises_slowly() -> None:
    trip = RoundTrip()
    assert trip.seconds is None
    trip.observe(10 * MS)
    trip.observe(2 * MS)  # halfway down at once
    assert trip.seconds == pytest.approx(6 * MS)
    trip.observe(166 * MS)  # a queued attempt moves it by a sixteenth
    assert trip.seconds == pytest.approx(16 * MS)


def test_calls_of_one_process_share_what_it_learned_about_the_round_trip() -> None:
    script = Script()
    policy = script.policy(spread=1.0)
    done = threading.Event()

    def warm() -> None:
        learned(script, policy, 8 * MS)
        done.set()

    threading.Thread(target=warm).start()
    assert done.wait(10)
    attempts = policy.attempts("registering")
    losing(script, attempts, took=8 * MS, seen=1)
    next(attempts)
    assert script.windows == [pytest.approx(8 * MS)]


# --- what the retry loop reports ----------------------------------------------------------------


@dataclass(frozen=True)
class Reported(RetryPolicy):
    """The core's policy, keeping what `execute` told it about each attempt that did not commit."""

    reports: list[tuple[Outcome | None, int | None]] = field(default_factory=list, compare=False)

    def delay(self, attempt: Attempt, race: object, left: float) -> float:
        self.reports.append((attempt.outcome, attempt.seen))
        return super().delay(attempt, race, left)  # type: ignore[arg-type]


def test_a_registration_that_loses_reports_the_counter_it_read_and_learns_from_its_commit() -> None:
    script = Script(point=0.0)
    store = FaultyMetadataStore()
    policy = Reported(sleep=script.sleep, clock=script.clock, uniform=script.uniform)
    repo = ModelRepository(MemoryArtifactStore(), store, retry=policy)
    rival = ModelRepository(repo.artifacts, store)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    for _ in range(3):  # the experiment has counted 3 changes
        rival.register_model("exp1", artifact.run_artifact_id, "rival")
    repo.register_model("exp1", artifact.run_artifact_id, "warm")  # pins the bytes, leases once
    counted = 4
    script.windows.clear()
    lost: list[int] = []

    def rival_commits_first(writes: Sequence[Write], inner: MetadataStore) -> None:
        script.now += 12 * MS  # every write takes 12 ms
        if any(w.row == tables.COUNTER_ROW for w in writes) and len(lost) < 2:
            lost.append(1)
            store.fault = None
            for _ in range(2):  # two registrations of another host commit first
                rival.register_model("exp1", artifact.run_artifact_id, "rival")
            store.fault = rival_commits_first
        inner.transact(writes)

    store.fault = rival_commits_first
    model = repo.register_model("exp1", artifact.run_artifact_id, "racer")
    assert model.version == counted + 2 * 2 + 1
    assert policy.reports[-2:] == [(Outcome.LOST, counted), (Outcome.LOST, counted + 2)]
    assert policy.round_trip.seconds == pytest.approx(12 * MS)


def test_throttling_is_reported_as_such() -> None:
    script = Script(point=0.0)
    store = FaultyMetadataStore()
    policy = Reported(sleep=script.sleep, clock=script.clock, uniform=script.uniform)
    repo = ModelRepository(MemoryArtifactStore(), store, retry=policy)
    artifact = record(repo, "exp1/run1/m.bin", b"m").artifact
    assert artifact is not None
    repo.register_model("exp1", artifact.run_artifact_id, "warm")
    refusals = [1, 1]

    def throttle_twice(writes: Sequence[Write], inner: MetadataStore) -> None:
        if refusals:
            refusals.pop()
            raise Throttled("slow down")
        inner.transact(writes)

    store.fault = throttle_twice
    assert repo.register_model("exp1", artifact.run_artifact_id, "racer").version == 2
    assert policy.reports[-2:] == [(Outcome.THROTTLED, None), (Outcome.THROTTLED, None)]


def test_a_lost_first_change_of_a_partition_reports_no_changes_seen() -> None:
    script = Script(point=0.0)
    policy = Reported(sleep=script.sleep, clock=script.clock, uniform=script.uniform)
    store = FaultyMetadataStore()
    repo = ModelRepository(MemoryArtifactStore(), store, retry=policy)
    refusals = [1]

    def refuse_once(writes: Sequence[Write], inner: MetadataStore) -> None:
        if refusals and len(writes) > 1:  # the record's own transaction (its run is listed alone first)
            refusals.pop()
            raise ConditionFailed("someone else wrote it")
        inner.transact(writes)

    store.fault = refuse_once
    assert record(repo, "exp1/run1/m.bin", b"m").artifact is not None  # the run's first change
    assert policy.reports == [(Outcome.LOST, 0)]
