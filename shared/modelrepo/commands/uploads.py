"""Uploads: recording run artifacts exactly once, rejections, and flagging vanished objects."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import BinaryIO

from modelrepo import outbox, tables
from modelrepo.errors import InvalidInput, NotFound, ObjectChanged, ObjectMissing
from modelrepo.events import ObjectCreated, happened_after
from modelrepo.model import ArtifactKey, Experiment, Page, Record, Rejection, RunArtifact, check_run_id
from modelrepo.ports import Item, Put, iter_chunks
from modelrepo.unit_of_work import Context, UnitOfWork, execute, page, query_all


class Outcome(StrEnum):
    RECORDED = "recorded"  # a new artifact, or this version became the key's current one again
    DUPLICATE = "duplicate"  # this object version was already recorded
    STALE = "stale"  # a newer upload of the key already replaced this version
    GONE = "gone"  # the object was deleted before it could be read
    REJECTED = "rejected"  # the key does not fit the layout; recorded as a rejection


class RecordResult(Record):
    outcome: Outcome
    artifact: RunArtifact | None = None
    rejection: Rejection | None = None


def artifact_subject(artifact: RunArtifact) -> str:
    return f"runs/{artifact.run_id}/artifacts/{artifact.run_artifact_id}"


def record_artifact(ctx: Context, event: ObjectCreated) -> RecordResult:
    """Record one upload; the same object version delivered any number of times counts once."""
    try:
        where = ArtifactKey.parse(event.key)
    except InvalidInput as problem:
        return record_rejection(ctx, event, problem.detail)
    artifact_id = tables.run_artifact_id(where.experiment_id, where.run_id, where.name, event.etag)
    partition, artifact_row = tables.locate_run_artifact(artifact_id)
    current_row = tables.current_row(where.experiment_id, where.name)
    measured: list[tuple[str, int]] = [(event.sha256, event.size)] if event.sha256 else []
    listed = ctx.remembered("listed experiments")  # experiments this process knows are listed

    def command(uow: UnitOfWork) -> RecordResult:
        existing, current = uow.get(artifact_row), uow.get(current_row)
        if existing is not None:
            artifact = RunArtifact.model_validate(existing.data["artifact"])
            is_current = current is not None and current.data["artifact"]["runArtifactId"] == artifact_id
            if is_current and current is not None and current.data["artifact"].get("vanishedAt"):
                action = "artifact.restored"  # the object a sweep found missing is back
            elif is_current or (current is not None and not _is_newer(ctx, event, current)):
                return RecordResult(outcome=Outcome.DUPLICATE, artifact=artifact)
            else:
                action = "artifact.current"  # an older version's bytes were uploaded again
        else:
            if current is not None and not _is_newer(ctx, event, current):
                return RecordResult(outcome=Outcome.STALE)
            if not measured:
                try:
                    measured.append(_digest(ctx, event.key, event.etag))
                except ObjectMissing:
                    return RecordResult(outcome=Outcome.GONE)
                except ObjectChanged:
                    return RecordResult(outcome=Outcome.STALE)
            digest, size = measured[0]
            artifact = RunArtifact(
                run_artifact_id=artifact_id,
                experiment_id=where.experiment_id,
                run_id=where.run_id,
                name=where.name,
                key=where.key,
                size=size,
                etag=event.etag,
                sha256=digest,
                uploaded_at=event.uploaded_at,
                recorded_at=uow.now,
            )
            action = "artifact.recorded"
            uow.create(artifact_row, {"artifact": artifact.to_json()})
        uow.save(current_row, {"artifact": artifact.to_json(), "sequencer": event.sequencer})
        if not listed.get(where.experiment_id):
            uow.list_first(_experiment_listing(where.experiment_id, uow.now))
        uow.emit(
            outbox.ARTIFACT_RECORDED,
            artifact_subject(artifact),
            artifact.to_json(),
            actor=event.actor,
            action=action,
            about=f"artifact {artifact_id}",
            details={"key": where.key},
        )
        return RecordResult(outcome=Outcome.RECORDED, artifact=artifact)

    result = execute(ctx, partition, f"recording {where.key!r}", command)
    if result.outcome is Outcome.RECORDED:
        listed.put(where.experiment_id, True)
    return result


def _experiment_listing(experiment_id: str, seen_at: datetime) -> Put:
    """The listing of an experiment known only from its artifacts so far, from the first one seen.

    The upload writes it (if absent) rather than the index subscriber, which then has no use for
    runs' events: with a run per upload, following them cost the subscriber a read of the events
    and a cursor write per upload. Listing rows are never removed, so once an experiment is listed
    (by this or by its first change) the process remembers it and later uploads skip the write; its
    summary is the subscriber's from its first change on."""
    described = Experiment(experiment_id=experiment_id, created_at=seen_at, updated_at=seen_at)
    document = {"experimentId": experiment_id, "experiment": described.to_json(), "sequence": 0}
    return Put(tables.EXPERIMENTS_PARTITION, tables.experiment_index_row(experiment_id), document, if_absent=True)


def _is_newer(ctx: Context, event: ObjectCreated, current: Item) -> bool:
    recorded_sequencer = current.data.get("sequencer")
    recorded_at = datetime.fromisoformat(current.data["artifact"]["uploadedAt"])
    if not (event.sequencer and recorded_sequencer) and _may_tie(event.uploaded_at, recorded_at):
        # Without sequencers, timestamps (Last-Modified has one-second resolution) cannot order
        # two uploads of the same second: the version the store still holds is the newer one.
        head = ctx.artifacts.head(event.key)
        return head is not None and head.etag == event.etag
    return happened_after(event.sequencer, event.uploaded_at, recorded_sequencer, recorded_at)


def _may_tie(a: datetime, b: datetime) -> bool:
    """Whether two upload times cannot order the uploads.

    Equal times cannot; nor can two times of the same second when one has no fraction: it may
    come from a source that knows only the second (Last-Modified, a listing) while the other came
    from an event timed to the millisecond.
    """
    if a == b:
        return True
    coarse = a.microsecond == 0 or b.microsecond == 0
    return coarse and a.replace(microsecond=0) == b.replace(microsecond=0)


def _digest(ctx: Context, key: str, etag: str) -> tuple[str, int]:
    """sha256 and size of exactly version `etag`, streamed in constant memory."""
    with ctx.artifacts.open(key, etag=etag) as stream:
        return sha256_of(stream)


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter_chunks(stream):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _printable(text: str) -> str:
    """Text safe to store and show even when it came from a hostile key (lone surrogates etc.)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_rejection(ctx: Context, event: ObjectCreated, reason: str) -> RecordResult:
    """List an upload that is not an artifact, with the reason (once per object version): a key
    outside the layout here, or what a host's store refused before reading it (a link, a FIFO)."""
    rejection = Rejection(
        key=_printable(event.key),
        reason=reason,
        size=event.size,
        etag=_printable(event.etag),
        uploaded_at=event.uploaded_at,
        recorded_at=ctx.now(),
    )
    row = tables.rejection_row(rejection.key, rejection.etag)

    def command(uow: UnitOfWork) -> RecordResult:
        if uow.get(row) is None:  # else an earlier delivery recorded it
            uow.create(row, {"rejection": rejection.to_json()})
        return RecordResult(outcome=Outcome.REJECTED, rejection=rejection)

    return execute(ctx, tables.REJECTIONS_PARTITION, f"recording the rejection of {rejection.key!r}", command)


def flag_vanished_objects(ctx: Context, run_id: str, *, actor: str) -> int:
    """Flag the run's current artifacts whose object is gone from the bucket; how many were new.

    Registered versions do not care (their bytes are pinned); the flag tells people that the
    run's file itself was deleted. A later upload of the same bytes clears it.
    """
    check_run_id(run_id)
    partition = tables.run_partition(run_id)
    flagged = 0
    for current in query_all(ctx.metadata, partition, tables.CURRENT_PREFIX):
        recorded = RunArtifact.model_validate(current.data["artifact"])
        if recorded.vanished_at is not None or ctx.artifacts.head(recorded.key) is not None:
            continue

        def command(uow: UnitOfWork, row: str = current.row, artifact_id: str = recorded.run_artifact_id) -> bool:
            item = uow.get(row)
            if item is None:
                return False
            artifact = RunArtifact.model_validate(item.data["artifact"])
            if artifact.run_artifact_id != artifact_id or artifact.vanished_at is not None:
                return False  # a new upload replaced it meanwhile, or another sweep flagged it
            marked = artifact.model_copy(update={"vanished_at": uow.now})
            uow.save(row, {**item.data, "artifact": marked.to_json()})
            uow.emit(
                outbox.ARTIFACT_VANISHED,
                artifact_subject(marked),
                marked.to_json(),
                actor=actor,
                action="artifact.vanished",
                about=f"artifact {artifact_id}",
                details={"key": artifact.key},
            )
            return True

        if execute(ctx, partition, f"flagging {recorded.key!r} as vanished", command):
            flagged += 1
    return flagged


def list_run_artifacts(ctx: Context, run_id: str) -> list[RunArtifact]:
    """The current version of every artifact of a run, by name."""
    check_run_id(run_id)
    items = query_all(ctx.metadata, tables.run_partition(run_id), tables.CURRENT_PREFIX)
    artifacts = [RunArtifact.model_validate(item.data["artifact"]) for item in items]
    return sorted(artifacts, key=lambda a: (a.experiment_id, a.name))


def get_artifact(ctx: Context, run_artifact_id: str) -> RunArtifact:
    """A recorded run artifact. Its row is written once (if absent) and never changed, so a copy
    read earlier is still true: registrations of one artifact skip the read."""
    remembered = ctx.remembered("artifacts")
    known: RunArtifact | None = remembered.get(run_artifact_id)
    if known is not None:
        return known
    partition, row = tables.locate_run_artifact(run_artifact_id)
    item = ctx.metadata.get(partition, row)
    if item is None:
        raise NotFound(f"run artifact {run_artifact_id!r} is not recorded")
    artifact = RunArtifact.model_validate(item.data["artifact"])
    remembered.put(run_artifact_id, artifact)
    return artifact


def list_rejections(ctx: Context, *, limit: int, cursor: str | None = None) -> Page[Rejection]:
    items, next_cursor = page(ctx.metadata, tables.REJECTIONS_PARTITION, tables.REJECTION_PREFIX, limit, cursor)
    return Page[Rejection](
        items=[Rejection.model_validate(i.data["rejection"]) for i in items], next_cursor=next_cursor
    )
