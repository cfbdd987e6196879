"""What changed: the audit trail and the events of an experiment or a run, read from one outbox."""

from __future__ import annotations

from modelrepo import tables
from modelrepo.errors import InvalidInput
from modelrepo.limits import MAX_NUMBER, check_limit
from modelrepo.model import AuditEntry, Page, check_experiment_id, check_run_id
from modelrepo.outbox import CloudEvent, audit_entry_of, event_of
from modelrepo.ports import MetadataStore
from modelrepo.unit_of_work import Context, page


def experiment_audit(ctx: Context, experiment_id: str, *, limit: int, cursor: str | None = None) -> Page[AuditEntry]:
    check_experiment_id(experiment_id)
    return _audit(ctx.metadata, tables.experiment_partition(experiment_id), limit, cursor)


def run_audit(ctx: Context, run_id: str, *, limit: int, cursor: str | None = None) -> Page[AuditEntry]:
    check_run_id(run_id)
    return _audit(ctx.metadata, tables.run_partition(run_id), limit, cursor)


def _audit(metadata: MetadataStore, partition: str, limit: int, cursor: str | None) -> Page[AuditEntry]:
    items, next_cursor = page(metadata, partition, tables.EVENT_PREFIX, limit, cursor)
    return Page[AuditEntry](items=[audit_entry_of(i.data) for i in items], next_cursor=next_cursor)


def experiment_events(ctx: Context, experiment_id: str, *, after: int = 0, limit: int) -> Page[CloudEvent]:
    """The experiment's events with a sequence above `after`, oldest first; `next_cursor` is the
    sequence to pass as `after` for the next page (None when this page reached the end)."""
    check_experiment_id(experiment_id)
    return events_after(ctx.metadata, tables.experiment_partition(experiment_id), after=after, limit=limit)


def run_events(ctx: Context, run_id: str, *, after: int = 0, limit: int) -> Page[CloudEvent]:
    check_run_id(run_id)
    return events_after(ctx.metadata, tables.run_partition(run_id), after=after, limit=limit)


def events_after(metadata: MetadataStore, partition: str, *, after: int, limit: int) -> Page[CloudEvent]:
    """One bounded query: the events of a partition after a sequence number."""
    check_limit(limit)
    if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_NUMBER:
        raise InvalidInput(f"after must be a sequence number from 0 to {MAX_NUMBER}")
    start = tables.event_row(after) if after > 0 else None
    items = metadata.query(partition, tables.EVENT_PREFIX, after=start, limit=limit + 1)
    events = [event_of(item.data) for item in items[:limit]]
    more = len(items) > limit
    return Page[CloudEvent](items=events, next_cursor=str(events[-1].sequence) if more else None)
