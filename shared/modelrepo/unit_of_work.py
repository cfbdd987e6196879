"""The unit of work: one command's reads and writes in one partition, committed as one atomic write.

Every command of the core is a small function over a `UnitOfWork`. The unit of work reads rows with
their ETags, collects the writes the command decides on, guards each replaced row by the ETag it was
read with, and appends the change's event row (its CloudEvent and audit entry, `modelrepo.outbox`)
with the partition's next event sequence. `execute` owns the one retry loop: a lost race re-reads
and tries again with jittered backoff until the deadline; a commit whose answer was lost is
recognised by the request token in its event row, so the command is not applied twice.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from modelrepo import tables
from modelrepo.errors import ConditionFailed, OutcomeUnknown, Throttled
from modelrepo.limits import check_limit
from modelrepo.ports import ArtifactStore, Delete, Item, MetadataStore, Put, Write
from modelrepo.retry import RetryPolicy

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

DEFAULT_SOURCE = "urn:modelrepo:unnamed"
# Who the host authenticated for the request being handled (an IAM ARN, an API key's name, ...),
# beside the actor a request names itself. Hosts set it around each request (`Api.handle`).
principal: ContextVar[str | None] = ContextVar("principal", default=None)
SCAN_BUDGET = 1000  # rows a filtered page may read when no index serves its filter
REMEMBERED = 4096


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """A time as CloudEvents and JSON Schema's date-time want it (UTC, 'Z'), as pydantic writes it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Remembered(Generic[K, V]):
    """A bounded, thread-safe memory of facts that never change once true (least recent dropped)."""

    def __init__(self, capacity: int = REMEMBERED) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._guard:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._guard:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


@dataclass
class Context:
    """What every command works with: the two stores, the retry policy, the clock, this repository's
    identity as an event source, and the process's memories of facts that never change."""

    artifacts: ArtifactStore
    metadata: MetadataStore
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    now: Callable[[], datetime] = utc_now
    source: str = DEFAULT_SOURCE
    default_approval: str = "pending"  # the approval status new versions start with (ApprovalStatus)
    # Called with a partition after each commit that appended events to it (dispatchers listen).
    committed: list[Callable[[str], None]] = field(default_factory=list)
    memory: dict[str, Remembered[Any, Any]] = field(default_factory=dict)

    def remembered(self, name: str) -> Remembered[Any, Any]:
        memory = self.memory.get(name)
        if memory is None:
            memory = self.memory.setdefault(name, Remembered())
        return memory


class UnitOfWork:
    """One attempt of one command on one partition."""

    def __init__(self, ctx: Context, partition: str, attempt: int = 0) -> None:
        self.ctx = ctx
        self.partition = partition
        self.attempt = attempt
        self.now = ctx.now()  # every record of one change carries the same time
        self._time = rfc3339(self.now)
        self.token = uuid.uuid4().hex
        self._read: dict[str, Item | None] = {}
        self._writes: dict[str, Write] = {}
        self._counter: dict[str, Any] | None = None
        self._listings: list[Put] = []
        self.events: list[int] = []  # the sequences this attempt appended

    # --- reads -----------------------------------------------------------------------------------

    def get(self, row: str) -> Item | None:
        """A strongly consistent read, remembered for this attempt (its ETag guards the write)."""
        if row not in self._read:
            self._read[row] = self.ctx.metadata.get(self.partition, row)
        return self._read[row]

    def read(self, row: str) -> bool:
        """Whether this attempt has read `row` (so a write to it can be guarded by that read)."""
        return row in self._read

    def query(self, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        return self.ctx.metadata.query(self.partition, prefix, after=after, limit=limit)

    @property
    def counter(self) -> Mapping[str, Any]:
        """The partition's counter row as this attempt will write it: latest version, event sequence."""
        if self._counter is not None:
            return self._counter
        item = self.get(tables.COUNTER_ROW)
        return item.data if item is not None else {}

    @property
    def seen(self) -> int | None:
        """How many changes the partition had counted when this attempt read its counter row (its
        event sequence; 0 before the first); None if the attempt did not read it."""
        if tables.COUNTER_ROW not in self._read:
            return None
        item = self._read[tables.COUNTER_ROW]
        return int(item.data.get("sequence", 0)) if item is not None else 0

    # --- writes ----------------------------------------------------------------------------------

    def create(self, row: str, data: Mapping[str, Any]) -> None:
        """Write a row that must not exist yet."""
        self._stage(Put(self.partition, row, data, if_absent=True))

    def save(self, row: str, data: Mapping[str, Any]) -> None:
        """Replace a row read in this attempt only if nobody changed it since; create it only if it
        was absent."""
        if row not in self._read:
            raise RuntimeError(f"save({row!r}) needs the row to be read first in the same unit of work")
        self._stage(Put.over(self._read[row], self.partition, row, data))

    def upsert(self, row: str, data: Mapping[str, Any]) -> None:
        """Write a row whatever it holds (for rows only one writer owns)."""
        self._stage(Put(self.partition, row, data))

    def remove(self, row: str) -> None:
        """Delete a row read in this attempt, only if nobody changed it since."""
        current = self._read.get(row)
        if current is None:
            raise RuntimeError(f"remove({row!r}) needs the row to be read (and present) first")
        self._stage(Delete(self.partition, row, if_match=current.etag))

    def list_first(self, listing: Put) -> None:
        """Write an index row in another partition before this change, if it is absent (one
        conditional write of its own, like the partition's own listing): what this change brings
        into being is listed even if the process dies right after the commit."""
        self._listings.append(listing)

    def set_counter(self, **fields: Any) -> None:
        self._counter = {**self.counter, **fields}

    def emit(
        self,
        event_type: str,
        subject: str,
        data: Mapping[str, Any],
        *,
        actor: str,
        action: str,
        about: str,
        details: Mapping[str, Any] | None = None,
        by_principal: str | None = None,
    ) -> int:
        """Append the change's event: the next sequence of the partition, in the same atomic write;
        returns the sequence. `action`, `about` and `details` are the audit entry's (what was done,
        to what, with what). `by_principal` is who the host authenticated; by default the one of
        the request this thread handles (registrations batched from other threads pass their own).

        The CloudEvent is written as its wire form directly (this runs once per registration in a
        batch, where building and dumping a model per event measurably cost throughput);
        `outbox.CloudEvent` validates it wherever it is read.
        """
        sequence = int(self.counter.get("sequence", 0)) + 1
        self.set_counter(sequence=sequence, updatedAt=self._time, createdAt=self.counter.get("createdAt", self._time))
        event = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": self.ctx.source,
            "type": event_type,
            "subject": subject,
            "time": self._time,
            "datacontenttype": "application/json",
            "data": data,
            "sequence": sequence,
            "actor": actor,
        }
        if (who := by_principal or principal.get()) is not None:
            event["principal"] = who
        document = {"event": event, "action": action, "subject": about, "details": details or {}, "token": self.token}
        self.create(tables.event_row(sequence), document)
        self.events.append(sequence)
        return sequence

    def replace_event_data(self, data: Mapping[str, Any]) -> None:
        """Set the data of the event just emitted (when the record it carries depends on the
        counter values that emitting set, such as the experiment's updatedAt)."""
        row = tables.event_row(self.events[-1])
        put = self._writes[row]
        assert isinstance(put, Put)
        document = dict(put.data)
        document["event"] = {**document["event"], "data": data}
        self._writes[row] = Put(put.partition, row, document, if_absent=True)

    def _stage(self, write: Write) -> None:
        if write.row in self._writes:
            raise RuntimeError(f"row {write.row!r} is written twice in one unit of work")
        self._writes[write.row] = write

    # --- commit ----------------------------------------------------------------------------------

    @property
    def has_writes(self) -> bool:
        return bool(self._writes) or self._counter is not None

    @property
    def marker(self) -> str | None:
        """The row that proves this attempt committed (its first event row carries the token)."""
        return tables.event_row(self.events[0]) if self.events else None

    def writes(self) -> list[Write]:
        writes = list(self._writes.values())
        if self._counter is not None:
            self.get(tables.COUNTER_ROW)
            writes.insert(
                0, Put.over(self._read[tables.COUNTER_ROW], self.partition, tables.COUNTER_ROW, self._counter)
            )
        return writes

    def commit(self) -> None:
        writes = self.writes()
        listings = list(self._listings)
        if self._read.get(tables.COUNTER_ROW, False) is None and (index := tables.index_put(self.partition)):
            # The partition's first change: list it first, so sweeps and dispatchers find it even if
            # the process dies right after the commit. Created only if absent: a projection may
            # already have written a summary there.
            listings.insert(0, index)
        for listing in listings:
            with contextlib.suppress(ConditionFailed):
                self.ctx.metadata.transact([listing])
        self.ctx.metadata.transact(writes)


def execute(ctx: Context, partition: str, doing: str, command: Callable[[UnitOfWork], R]) -> R:
    """Run `command` in a unit of work until it commits, loses for good, or the deadline passes.

    A lost race (a guarded row changed, a row appeared) or throttling re-reads and runs the command
    again after a wait the retry policy sizes from what the attempt saw (the counter's change count
    it read, how long it took). An unknown outcome (the answer was lost) is resolved before the
    next attempt: if the attempt's event row holds its token, it committed and its result stands.
    Commands without events must be idempotent when run again on what they read.
    """
    unresolved: list[tuple[str, str, R]] = []  # (event row, token, result) of attempts that may have committed
    for attempt in ctx.retry.attempts(doing):
        try:
            for row, token, result in unresolved:
                if _holds_token(ctx.metadata, partition, row, token):
                    _notify(ctx, partition)
                    return result
        except Throttled:
            attempt.throttled()
            continue  # cannot tell yet whether an earlier attempt committed: never apply it twice
        uow = UnitOfWork(ctx, partition, attempt.number)
        result = command(uow)
        if not uow.has_writes:
            return result
        try:
            uow.commit()
        except OutcomeUnknown:
            attempt.unknown()
            if uow.marker is not None:
                unresolved.append((uow.marker, uow.token, result))
            continue
        except ConditionFailed:
            attempt.lost(uow.seen)
            continue
        except Throttled:
            attempt.throttled()
            continue
        attempt.committed()
        if uow.events:
            _notify(ctx, partition)
        return result
    raise AssertionError("unreachable: the retry policy raises Busy")


def _holds_token(metadata: MetadataStore, partition: str, row: str, token: str) -> bool:
    item = metadata.get(partition, row)
    return item is not None and item.data.get("token") == token


def _notify(ctx: Context, partition: str) -> None:
    for listener in ctx.committed:
        listener(partition)


# --- reading -------------------------------------------------------------------------------------


def page(
    metadata: MetadataStore, partition: str, prefix: str, limit: int, cursor: str | None
) -> tuple[list[Item], str | None]:
    """One page of a listing and the cursor of the next; one bounded query whatever the total."""
    check_limit(limit)
    after = tables.decode_cursor(cursor, prefix) if cursor else None
    items = metadata.query(partition, prefix, after=after, limit=limit + 1)
    if len(items) > limit:
        return items[:limit], tables.encode_cursor(items[limit - 1].row)
    return items, None


def filtered_page(
    metadata: MetadataStore,
    partition: str,
    prefix: str,
    limit: int,
    cursor: str | None,
    keep: Callable[[Item], bool],
    budget: int = SCAN_BUDGET,
) -> tuple[list[Item], str | None]:
    """A page of the rows `keep` accepts, reading at most `budget` rows for it.

    Without an index for a filter the rows must be read to be judged: when most rows pass, this is
    one query of `limit + 1`, like `page`; when few pass, the page reads on to `budget` rows and may
    hold fewer than `limit` items while still returning a cursor to go on from.
    """
    check_limit(limit)
    after = tables.decode_cursor(cursor, prefix) if cursor else None
    kept: list[Item] = []
    scanned = 0
    while True:
        want = min(limit - len(kept) + 1, budget - scanned)
        items = metadata.query(partition, prefix, after=after, limit=want)
        scanned += len(items)
        for item in items:
            if keep(item):
                if len(kept) == limit:
                    return kept, tables.encode_cursor(kept[-1].row)
                kept.append(item)
            after = item.row
        if len(items) < want:
            return kept, None
        if scanned >= budget:
            return kept, tables.encode_cursor(after) if after else None


def query_all(metadata: MetadataStore, partition: str, prefix: str, page_size: int = 1000) -> list[Item]:
    found: list[Item] = []
    after: str | None = None
    while True:
        items = metadata.query(partition, prefix, after=after, limit=page_size)
        found.extend(items)
        if len(items) < page_size:
            return found
        after = items[-1].row


def rows_of(items: Sequence[Item], key: str) -> list[Any]:
    return [item.data[key] for item in items]
