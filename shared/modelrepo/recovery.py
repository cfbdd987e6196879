"""Healing what the event path missed: the reconcile sweep and the replay of dead letters.

Both go through `ModelRepository.record_artifact`, so they are idempotent and safe to run while
uploads and registrations continue: whatever they record is exactly what the event would have.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from modelrepo import tables
from modelrepo.collect import collect
from modelrepo.commands.uploads import Outcome
from modelrepo.dispatch import Dispatcher
from modelrepo.errors import ModelRepoError
from modelrepo.events import ObjectCreated
from modelrepo.model import Record
from modelrepo.ports import DeadLetter, DeadLetterQueue, Put
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository

log = logging.getLogger(__name__)

SWEEP_ROW = "reconcile"
OBJECTS, RECORDS = "objects", "records"
ACTOR = "reconcile"


@runtime_checkable
class LeavesTempFiles(Protocol):
    """A store whose writers keep temporary files that a crash can leave behind (the folder store)."""

    def remove_stale_temp_files(self) -> int: ...


class SweepReport(Record):
    objects_scanned: int = 0
    recorded: int = 0  # objects that had no record until this sweep
    rejected: int = 0
    runs_checked: int = 0
    vanished: int = 0  # records newly flagged because their object is gone
    indexed: int = 0  # events the index had not yet followed (a crash between a commit and its projection)
    released: int = 0  # pinned digests no version needs any longer, whose bytes were deleted
    complete: bool = False  # False: the time budget ran out; the next call resumes


class Reconciler:
    """A resumable sweep in two phases.

    Objects → records: every object in the bucket is offered to `record_artifact` (a crash between
    the object write and the table write leaves exactly such an unrecorded object).
    Records → objects: every recorded run's current artifacts are checked against the bucket and
    those whose object vanished are flagged (`ModelRepository.flag_vanished_objects`).
    Once both are through, the index catches up with every partition's events
    (`modelrepo.projections`) and the collector releases pinned bytes that no version needs
    (`modelrepo.collect`).
    Where the sweep stands is kept in the metadata store, so a scheduled run continues where the
    previous one ran out of time.
    """

    def __init__(
        self,
        repository: ModelRepository,
        *,
        page_size: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repository = repository
        self.page_size = page_size
        self._clock = clock

    def run(self, *, budget_seconds: float | None = None) -> SweepReport:
        deadline = None if budget_seconds is None else self._clock() + budget_seconds
        counts: Counter[str] = Counter()
        phase, after = self._position()
        if phase == OBJECTS and after is None:
            self._tidy()
        while deadline is None or self._clock() < deadline:
            if phase == OBJECTS:
                after = self._objects_page(after, counts)
                if after is None:
                    phase = RECORDS
            else:
                after = self._records_page(after, counts)
                if after is None:
                    self._save(OBJECTS, None)
                    counts["indexed"] = Dispatcher(self.repository.metadata, Indexer(self.repository.metadata)).sweep()
                    counts["released"] = collect(self.repository.context).released
                    return SweepReport(**counts, complete=True)
            self._save(phase, after)
        return SweepReport(**counts)

    def _tidy(self) -> None:
        """A sweep from the start also removes what crashed writers left (a partial pin, say)."""
        store = self.repository.artifacts
        if isinstance(store, LeavesTempFiles):
            removed = store.remove_stale_temp_files()
            if removed:
                log.info("reconcile removed %d temporary file(s) left by crashed writers", removed)

    def _position(self) -> tuple[str, str | None]:
        item = self.repository.metadata.get(tables.SWEEPS_PARTITION, SWEEP_ROW)
        if item is None:
            return OBJECTS, None
        return str(item.data["phase"]), item.data.get("after")

    def _save(self, phase: str, after: str | None) -> None:
        # Unconditional: two sweeps at once only repeat idempotent work.
        self.repository.metadata.transact([Put(tables.SWEEPS_PARTITION, SWEEP_ROW, {"phase": phase, "after": after})])

    def _objects_page(self, after: str | None, counts: Counter[str]) -> str | None:
        listing = self.repository.artifacts.list(after=after, limit=self.page_size)
        for info in listing.objects:
            result = self.repository.record_artifact(ObjectCreated.from_object(info, ACTOR))
            counts["objects_scanned"] += 1
            if result.outcome is Outcome.RECORDED:
                counts["recorded"] += 1
                log.info("reconcile recorded %s", info.key)
            elif result.outcome is Outcome.REJECTED:
                counts["rejected"] += 1
        return listing.next_after

    def _records_page(self, after: str | None, counts: Counter[str]) -> str | None:
        runs = self.repository.metadata.query(
            tables.RUNS_PARTITION, tables.RUN_PREFIX, after=after, limit=self.page_size
        )
        for run in runs:
            counts["runs_checked"] += 1
            counts["vanished"] += self.repository.flag_vanished_objects(run.data["runId"], actor=ACTOR)
        return runs[-1].row if len(runs) == self.page_size else None


class ReplayOutcome(Record):
    handle: str
    source: str
    keys: list[str]
    outcomes: list[str]
    replayed: bool
    error: str | None = None
    failed_at: datetime | None = None


def replay_dead_letters(
    repository: ModelRepository, queue: DeadLetterQueue, *, limit: int = 100
) -> list[ReplayOutcome]:
    """Record the uploads of parked letters; a letter is removed only once all its uploads went through."""
    results: list[ReplayOutcome] = []
    for letter in queue.peek(limit):
        results.append(_replay(repository, queue, letter))
    return results


def _replay(repository: ModelRepository, queue: DeadLetterQueue, letter: DeadLetter) -> ReplayOutcome:
    keys = [event.key for event in letter.events]
    base = {"handle": letter.handle, "source": letter.source, "keys": keys, "failed_at": letter.failed_at}
    if not letter.events:
        return ReplayOutcome(**base, outcomes=[], replayed=False, error=f"cannot be decoded: {letter.detail}")
    outcomes: list[str] = []
    try:
        for event in letter.events:
            outcomes.append(repository.record_artifact(event).outcome.value)
    except ModelRepoError as error:
        return ReplayOutcome(**base, outcomes=outcomes, replayed=False, error=error.detail)
    queue.remove(letter)
    return ReplayOutcome(**base, outcomes=outcomes, replayed=True)
