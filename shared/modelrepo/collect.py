"""Releasing pinned bytes that no version needs any longer, safely beside new registrations.

The registry is content-addressed: versions of any experiment share one copy of equal bytes, so
bytes may go only when no version that is not deleted references their digest. Deciding that and
deleting cannot be one atomic step, and a registration may be pinning the same bytes right then.
A lease closes that gap:

- A registration writes the digest's lease row (`pins` partition, `lease~<digest>`, with the time)
  before it makes sure the bytes are in the registry, and commits its version within half the
  lease (checked just before its transaction; else it answers Busy and the client retries).
  A lease row younger than a quarter of the lease is shared instead of rewritten: a registration
  that reads it is bound by that row's time exactly as if it had written it (the collector judges
  only the row's time), and hosts registering one artifact together do not all race for one row.
- The collector (mark and sweep, in the reconcile sweep) notes the time it starts, collects the
  digests of every version not deleted, and for each registry digest outside that set whose lease
  is older than the lease length, first claims the lease row (a guarded write that fails if a
  registration leased meanwhile; while claimed, registrations wait), then deletes the bytes, then
  the lease row.

A version committed before the mark phase read its experiment is marked; one committed after
holds a lease newer than the collector's start minus the lease length, so its digest is skipped;
one that leased after the collector read the lease makes the claim fail, or waits for the claim
to end and then finds the bytes gone and copies them again.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from modelrepo import tables
from modelrepo.errors import Busy, ConditionFailed, OutcomeUnknown, Throttled
from modelrepo.model import Record, RegisteredModel
from modelrepo.ports import Delete, Put
from modelrepo.unit_of_work import Context, query_all, rfc3339

PINS_PARTITION = "pins"
LEASE_PREFIX = "lease~"
LEASE = timedelta(hours=1)
# A claim older than this was left by a collector that died mid-release: a registration finishes it.
ABANDONED = timedelta(minutes=10)
# A lease this young is shared as it is: at least a quarter of the lease is left to commit within.
SHARED = 4


class CollectReport(Record):
    live_digests: int = 0
    pinned_digests: int = 0
    released: int = 0  # digests whose bytes were deleted
    leased: int = 0  # unreferenced digests kept because a registration may be pinning them


def lease_row(digest: str) -> str:
    return LEASE_PREFIX + digest


def is_fresh(leased_at: datetime, now: datetime) -> bool:
    """Whether a lease taken at `leased_at` may be shared by a registration starting `now`."""
    return timedelta(0) <= now - leased_at < LEASE / SHARED


def lease(ctx: Context, digest: str) -> datetime:
    """Lease a digest for a registration about to pin it; waits while the collector releases it.

    Returns the lease's time, which bounds when the registration may commit (`check_lease`)."""
    row = lease_row(digest)
    for _ in ctx.retry.attempts(f"leasing pinned bytes {digest[:12]}"):
        current = ctx.metadata.get(PINS_PARTITION, row)
        now = ctx.now()
        if current is not None and current.data.get("collecting"):
            if now - datetime.fromisoformat(current.data["claimedAt"]) > ABANDONED:
                ctx.artifacts.discard_pinned(digest)
                with contextlib.suppress(ConditionFailed, Throttled, OutcomeUnknown):
                    ctx.metadata.transact([Delete(PINS_PARTITION, row, if_match=current.etag)])
            continue  # being released: once it is gone, pin the bytes anew
        if current is not None and is_fresh(leased_at := datetime.fromisoformat(current.data["at"]), now):
            return leased_at
        document = {"at": rfc3339(now)}
        try:
            ctx.metadata.transact([Put.over(current, PINS_PARTITION, row, document)])
        except (ConditionFailed, Throttled, OutcomeUnknown):
            continue
        return now
    raise AssertionError("unreachable: the retry policy raises Busy")


def check_lease(ctx: Context, leased_at: datetime, now: datetime) -> None:
    """A registration commits only while its lease is young enough that no collector can have
    judged it stale (half the lease length)."""
    if now - leased_at > LEASE / 2:
        raise Busy("this registration took longer than its pin lease allows; retry it", retry_after=0)


def collect(ctx: Context) -> CollectReport:
    """Mark every digest a version that is not deleted references; release the other pinned bytes."""
    from modelrepo.commands.versions import manifest_of  # registering leases through this module

    started = ctx.now()
    live: set[str] = set()
    for indexed in query_all(ctx.metadata, tables.EXPERIMENTS_PARTITION, tables.EXPERIMENT_PREFIX):
        partition = tables.experiment_partition(indexed.data["experimentId"])
        for item in query_all(ctx.metadata, partition, tables.VERSION_PREFIX):
            model = RegisteredModel.model_validate(item.data["model"])
            if model.deleted is None:
                live.add(model.sha256)
                if model.files is not None:  # a folder: its manifest and every file it lists
                    live.update(entry.sha256 for entry in manifest_of(ctx, model).files)
    report = CollectReport(live_digests=len(live))
    pinned = released = leased = 0
    after: str | None = None
    while True:
        digests, after = ctx.artifacts.list_pinned(after=after)
        pinned += len(digests)
        for digest in digests:
            if digest in live:
                continue
            if _release(ctx, digest, started):
                released += 1
            else:
                leased += 1
        if after is None:
            break
    return report.model_copy(update={"pinned_digests": pinned, "released": released, "leased": leased})


def _release(ctx: Context, digest: str, started: datetime) -> bool:
    row = lease_row(digest)
    current = ctx.metadata.get(PINS_PARTITION, row)
    if current is not None and current.data.get("collecting"):
        if ctx.now() - datetime.fromisoformat(current.data["claimedAt"]) <= ABANDONED:
            return False  # another collector is releasing it
    elif current is not None and datetime.fromisoformat(current.data["at"]) > started - LEASE:
        return False
    claim = {
        "at": current.data["at"] if current else rfc3339(started - LEASE),
        "collecting": True,
        "claimedAt": rfc3339(ctx.now()),
    }
    try:
        ctx.metadata.transact([Put.over(current, PINS_PARTITION, row, claim)])
    except (ConditionFailed, Throttled, OutcomeUnknown):
        return False  # a registration leased it meanwhile (or the answer was lost): leave it
    ctx.artifacts.discard_pinned(digest)
    with contextlib.suppress(Throttled, OutcomeUnknown):
        ctx.metadata.transact([Delete(PINS_PARTITION, row)])
    return True
