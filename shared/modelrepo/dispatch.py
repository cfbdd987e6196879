"""Delivering the outbox: each partition's events, in order, at least once, from a resumable cursor.

A `Dispatcher` serves one subscriber (a webhook, an Event Grid topic). Per partition it keeps a
cursor row (`dsp~<subscriber>`, in the partition itself) with the sequence of the last event the
subscriber accepted; `drain` hands the events after it to the `Publisher` a batch at a time and
moves the cursor only after the publisher accepted the batch. A crash between the two delivers the
batch again (at least once; consumers dedupe by the CloudEvent `id`), never skips one, and never
sends a later event of a partition before an earlier one.

A partition whose delivery keeps failing is parked: a row in the `deliveries` partition says since
when and why, the cursor stays where it is (order is kept: later events of that partition wait),
other partitions keep flowing, and the parked one is tried again with growing pauses, or at once
after an operator's `modelrepo replay`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from modelrepo import tables
from modelrepo.commands.changes import events_after
from modelrepo.errors import ConditionFailed, ModelRepoError, OutcomeUnknown, Throttled
from modelrepo.model import Record
from modelrepo.outbox import CloudEvent
from modelrepo.ports import Delete, Item, MetadataStore, Put
from modelrepo.unit_of_work import query_all, utc_now

log = logging.getLogger(__name__)

DELIVERIES_PARTITION = "deliveries"
PARKED_PREFIX = "park~"
SUBSCRIBER_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
BATCH = 100
FIRST_PAUSE = timedelta(seconds=5)
LONGEST_PAUSE = timedelta(minutes=10)


class DeliveryFailed(ModelRepoError):
    """The subscriber did not accept a batch (it answered an error, or could not be reached)."""


class Publisher(Protocol):
    """Where a subscriber's events go. `publish` returns once every event was accepted, in order;
    it raises `DeliveryFailed` otherwise (having perhaps delivered a prefix: that is redelivered).

    A publisher that has no use for runs' events (their artifacts) says so with a class attribute
    `follows_runs = False`: its dispatcher then neither reads those partitions nor keeps a cursor
    in them, which is most of the work of an upload when every upload is a run of its own.
    """

    @property
    def subscriber(self) -> str: ...

    def publish(self, events: Sequence[CloudEvent]) -> None: ...


class ParkedDelivery(Record):
    """A partition whose events a subscriber has not accepted for a while."""

    subscriber: str
    partition: str
    sequence: int  # the first event not delivered
    attempts: int
    failed_at: datetime
    retry_at: datetime
    error: str


def _parked_row(subscriber: str, partition: str) -> str:
    return f"{PARKED_PREFIX}{subscriber}~{partition}"


def partitions(metadata: MetadataStore, *, runs: bool = True) -> Iterator[str]:
    """Every partition that can hold events: each experiment and (unless not wanted) each run ever written."""
    for item in query_all(metadata, tables.EXPERIMENTS_PARTITION, tables.EXPERIMENT_PREFIX):
        yield tables.experiment_partition(item.data["experimentId"])
    if runs:
        for item in query_all(metadata, tables.RUNS_PARTITION, tables.RUN_PREFIX):
            yield tables.run_partition(item.data["runId"])


@dataclass
class Dispatcher:
    metadata: MetadataStore
    publisher: Publisher
    batch: int = BATCH
    now: Callable[[], datetime] = utc_now

    def __post_init__(self) -> None:
        if not SUBSCRIBER_PATTERN.fullmatch(self.publisher.subscriber):
            raise ValueError(f"subscriber name {self.publisher.subscriber!r} must match {SUBSCRIBER_PATTERN.pattern}")

    @property
    def subscriber(self) -> str:
        return self.publisher.subscriber

    @property
    def follows_runs(self) -> bool:
        return bool(getattr(self.publisher, "follows_runs", True))

    def follows(self, partition: str) -> bool:
        """Whether this subscriber gets the partition's events (every partition, or only experiments)."""
        return self.follows_runs or tables.is_experiment_partition(partition)

    # --- one partition ---

    def position(self, partition: str) -> int:
        item = self.metadata.get(partition, tables.dispatch_row(self.subscriber))
        return int(item.data["after"]) if item else 0

    def drain(self, partition: str, *, force: bool = False) -> int:
        """Deliver the partition's events after the cursor; how many were accepted.

        A parked partition waits for its retry time unless `force`. Raises nothing for a failed
        delivery: it parks the partition instead (and logs why). A partition the subscriber does not
        follow has nothing for it.
        """
        if not self.follows(partition):
            return 0
        parked = self.metadata.get(DELIVERIES_PARTITION, _parked_row(self.subscriber, partition))
        if parked is not None and not force and self.now() < datetime.fromisoformat(parked.data["retryAt"]):
            return 0
        delivered = 0
        while True:
            cursor = self.metadata.get(partition, tables.dispatch_row(self.subscriber))
            after = int(cursor.data["after"]) if cursor else 0
            page = events_after(self.metadata, partition, after=after, limit=self.batch)
            if not page.items:
                break
            try:
                self.publisher.publish(page.items)
            except DeliveryFailed as failure:
                self._park(partition, page.items[0].sequence, failure.detail, parked)
                return delivered
            delivered += len(page.items)
            if not self._advance(partition, cursor, page.items[-1].sequence):
                continue  # another dispatcher moved the cursor meanwhile: read where it stands
            if page.next_cursor is None:
                break
        if parked is not None:
            self._unpark(partition)
        return delivered

    def _advance(self, partition: str, cursor: Item | None, sequence: int) -> bool:
        row = tables.dispatch_row(self.subscriber)
        try:
            self.metadata.transact([Put.over(cursor, partition, row, {"after": sequence})])
        except (ConditionFailed, Throttled, OutcomeUnknown):
            return False  # re-read: the cursor only ever moves forward through a guarded write
        return True

    def _park(self, partition: str, sequence: int, error: str, earlier: Any) -> None:
        attempts = (int(earlier.data["attempts"]) if earlier else 0) + 1
        pause = min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** (attempts - 1))
        now = self.now()
        parked = ParkedDelivery(
            subscriber=self.subscriber,
            partition=partition,
            sequence=sequence,
            attempts=attempts,
            failed_at=now,
            retry_at=now + pause,
            error=error[:1000],
        )
        log.warning(
            "delivery to %s of %s from event %d failed (%s); parked, next try in %s",
            self.subscriber,
            partition,
            sequence,
            error,
            pause,
        )
        # If this write fails, the cursor still did not move: the next sweep tries again and parks then.
        with contextlib.suppress(Throttled, OutcomeUnknown):
            self.metadata.transact(
                [Put(DELIVERIES_PARTITION, _parked_row(self.subscriber, partition), parked.to_json())]
            )

    def _unpark(self, partition: str) -> None:
        # A stale parked row only delays the next try of a healthy partition.
        with contextlib.suppress(Throttled, OutcomeUnknown):
            self.metadata.transact([Delete(DELIVERIES_PARTITION, _parked_row(self.subscriber, partition))])

    # --- every partition ---

    def sweep(self, *, force: bool = False) -> int:
        """Drain every partition (a restart, a periodic safety net); how many events went out."""
        every = partitions(self.metadata, runs=self.follows_runs)
        return sum(self.drain(partition, force=force) for partition in every)

    def parked(self) -> list[ParkedDelivery]:
        prefix = f"{PARKED_PREFIX}{self.subscriber}~"
        return [
            ParkedDelivery.model_validate(item.data) for item in query_all(self.metadata, DELIVERIES_PARTITION, prefix)
        ]


def retry_now(metadata: MetadataStore, parked: ParkedDelivery, now: datetime) -> None:
    """Let the next pass of the subscriber's dispatcher try a parked partition at once."""
    document = parked.model_copy(update={"retry_at": now}).to_json()
    metadata.transact([Put(DELIVERIES_PARTITION, _parked_row(parked.subscriber, parked.partition), document)])


def parked_deliveries(metadata: MetadataStore) -> list[ParkedDelivery]:
    """Every parked delivery of every subscriber (for `modelrepo dead-letters`)."""
    return [ParkedDelivery.model_validate(i.data) for i in query_all(metadata, DELIVERIES_PARTITION, PARKED_PREFIX)]
