"""Versions: registering run artifacts as gapless versions, pinning their bytes, reading them."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from modelrepo import outbox, tables
from modelrepo.batching import GroupCommit, Ticket
from modelrepo.commands.uploads import get_artifact, sha256_of
from modelrepo.errors import Busy, Conflict, NotFound, ObjectChanged, ObjectMissing, Unprocessable
from modelrepo.limits import check_idempotency_key, check_version
from modelrepo.model import (
    Page,
    RegisteredModel,
    RunArtifact,
    check_actor,
    check_description,
    check_experiment_id,
)
from modelrepo.ports import MAX_WRITES_PER_TRANSACTION, Item
from modelrepo.unit_of_work import Context, UnitOfWork, execute, page

PIN_LOCK_STRIPES = 64


@dataclass
class Registration:
    artifact: RunArtifact
    registered_by: str
    description: str | None
    idempotency_key: str | None

    def model(self, version: int, uow: UnitOfWork) -> RegisteredModel:
        return RegisteredModel(
            experiment_id=self.artifact.experiment_id,
            version=version,
            run_artifact_id=self.artifact.run_artifact_id,
            run_id=self.artifact.run_id,
            artifact_name=self.artifact.name,
            registered_by=self.registered_by,
            registered_at=uow.now,
            description=self.description,
            sha256=self.artifact.sha256,
            size=self.artifact.size,
        )

    @property
    def writes(self) -> int:
        """Rows one registration adds to the batch's transaction: version, event, idempotency key."""
        return 3 if self.idempotency_key is not None else 2


def version_subject(experiment_id: str, version: int) -> str:
    return f"experiments/{experiment_id}/versions/{version}"


class Registrations:
    """This process's registration queues, one per experiment, and its memory of pinned digests."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._queues: weakref.WeakValueDictionary[str, GroupCommit[Registration, RegisteredModel]] = (
            weakref.WeakValueDictionary()
        )
        self._guard = threading.Lock()
        self._pinned = ctx.remembered("pinned")
        self._pin_locks = tuple(threading.Lock() for _ in range(PIN_LOCK_STRIPES))

    def register(
        self,
        experiment_id: str,
        run_artifact_id: str,
        registered_by: str,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> RegisteredModel:
        """Give a run artifact the experiment's next version, by optimistic concurrency.

        Read the counter with its ETag, then write counter+1, the version row and its event in one
        conditional transaction; on conflict re-read and retry with jittered backoff until the
        deadline. Registrations of one experiment queued in this process at the same moment share
        that transaction (counter+k, k version rows and k events: group commit).
        """
        check_experiment_id(experiment_id)
        check_actor(registered_by)
        if description is not None:
            check_description(description)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        artifact = get_artifact(self.ctx, run_artifact_id)
        if artifact.experiment_id != experiment_id:
            raise Unprocessable(
                f"run artifact {run_artifact_id!r} belongs to experiment "
                f"{artifact.experiment_id!r}, not {experiment_id!r}"
            )
        partition = tables.experiment_partition(experiment_id)
        if idempotency_key is not None:
            item = self.ctx.metadata.get(partition, tables.idempotency_row(idempotency_key))
            if (earlier := _replay(self.ctx, partition, idempotency_key, artifact, item)) is not None:
                return earlier
        self.pin(artifact)
        return self._queue(partition).submit(Registration(artifact, registered_by, description, idempotency_key))

    def _queue(self, partition: str) -> GroupCommit[Registration, RegisteredModel]:
        with self._guard:
            queue = self._queues.get(partition)
            if queue is None:
                queue = self._queues[partition] = GroupCommit(
                    take=_next_batch,
                    commit=lambda batch: self._commit_batch(partition, batch),
                    give_up=lambda: Busy(f"too many registrations are queued for {partition!r}; retry shortly"),
                    patience=self.ctx.retry.deadline_seconds,
                )
            return queue

    def _commit_batch(self, partition: str, batch: list[Ticket[Registration, RegisteredModel]]) -> None:
        """One unit of work for the whole batch: counter+k, k versions, k events, their keys."""

        def command(uow: UnitOfWork) -> dict[int, RegisteredModel | Exception]:
            settled: dict[int, RegisteredModel | Exception] = {}
            if uow.attempt > 0:  # an Idempotency-Key may have been used meanwhile (checked once before queueing)
                for index, ticket in enumerate(batch):
                    request = ticket.payload
                    if request.idempotency_key is None:
                        continue
                    item = uow.get(tables.idempotency_row(request.idempotency_key))
                    try:
                        earlier = _replay(self.ctx, partition, request.idempotency_key, request.artifact, item)
                    except Conflict as conflict:
                        settled[index] = conflict
                        continue
                    if earlier is not None:
                        settled[index] = earlier
            latest = int(uow.counter.get("latest", 0))
            for index, ticket in enumerate(batch):
                if index in settled:
                    continue
                request = ticket.payload
                latest += 1
                model = request.model(latest, uow)
                wire = model.to_json()
                uow.create(tables.version_row(latest), {"model": wire})
                uow.emit(
                    outbox.VERSION_REGISTERED,
                    version_subject(model.experiment_id, latest),
                    wire,
                    actor=request.registered_by,
                    action="model.registered",
                    about=f"version {latest}",
                    details={"runArtifactId": request.artifact.run_artifact_id, "sha256": request.artifact.sha256},
                )
                if request.idempotency_key is not None:
                    uow.create(
                        tables.idempotency_row(request.idempotency_key),
                        {"version": latest, "runArtifactId": request.artifact.run_artifact_id},
                    )
                settled[index] = model
            if uow.events:
                uow.set_counter(latest=latest)
            return settled

        try:
            settled = execute(self.ctx, partition, f"registering versions in {partition!r}", command)
        except Busy as busy:
            for ticket in batch:
                ticket.fail(busy)
            return
        for index, ticket in enumerate(batch):
            outcome = settled[index]
            if isinstance(outcome, Exception):
                ticket.fail(outcome)
            else:
                ticket.resolve(outcome)

    def pin(self, artifact: RunArtifact) -> None:
        """Make sure the artifact's bytes are in the registry, where no re-upload or delete can
        reach them. Once per digest in this process: registrations of one new artifact arriving
        together wait for one copy instead of each making its own, and later ones skip even the
        registry's check (a file system call, where 32 threads queue for the GIL again), since
        pinned bytes never change."""
        digest = artifact.sha256
        if self._pinned.get(digest):
            return
        with self._pin_locks[hash(digest) % PIN_LOCK_STRIPES]:
            if self._pinned.get(digest):
                return
            if not self.ctx.artifacts.has_pinned(digest):
                _copy_into_registry(self.ctx, artifact)
            self._pinned.put(digest, True)


def _next_batch(queue: deque[Ticket[Registration, RegisteredModel]]) -> list[Ticket[Registration, RegisteredModel]]:
    """The head of the queue and what follows it, as many as fit beside the counter in one
    transaction; a second request with an Idempotency-Key already in the batch waits its turn."""
    batch = [queue.popleft()]
    room = MAX_WRITES_PER_TRANSACTION - 1 - batch[0].payload.writes
    keys = {batch[0].payload.idempotency_key} - {None}
    for ticket in list(queue):
        request = ticket.payload
        if request.writes > room:
            break
        if request.idempotency_key is not None and request.idempotency_key in keys:
            continue
        queue.remove(ticket)
        batch.append(ticket)
        room -= request.writes
        if request.idempotency_key is not None:
            keys.add(request.idempotency_key)
    return batch


def _replay(
    ctx: Context, partition: str, idempotency_key: str, artifact: RunArtifact, item: Item | None
) -> RegisteredModel | None:
    """The version an Idempotency-Key already registered, if any; the key's row is `item`."""
    if item is None:
        return None
    if item.data["runArtifactId"] != artifact.run_artifact_id:
        raise Conflict(
            f"Idempotency-Key {idempotency_key!r} was already used to register run artifact "
            f"{item.data['runArtifactId']!r} as version {item.data['version']}"
        )
    return _version(ctx, partition, item.data["version"], artifact.experiment_id)


def _copy_into_registry(ctx: Context, artifact: RunArtifact) -> None:
    digest = artifact.sha256
    try:
        ctx.artifacts.pin(artifact.key, etag=artifact.etag, digest=digest)
    except ObjectMissing:
        raise Conflict(
            f"the object {artifact.key!r} of run artifact {artifact.run_artifact_id!r} was "
            "deleted before it could be registered; upload it again"
        ) from None
    except ObjectChanged:
        raise Conflict(
            f"the object {artifact.key!r} was overwritten after run artifact "
            f"{artifact.run_artifact_id!r} was recorded; register the newer upload's artifact"
        ) from None
    with ctx.artifacts.open_pinned(digest) as stream:
        pinned_digest, _ = sha256_of(stream)
    if pinned_digest != digest:
        ctx.artifacts.discard_pinned(digest)
        raise Conflict(
            f"the bytes of {artifact.key!r} do not match the sha256 recorded for run artifact "
            f"{artifact.run_artifact_id!r}; upload it again"
        )


# --- reading -------------------------------------------------------------------------------------


def version_item(ctx: Context, partition: str, version: int, experiment_id: str) -> Item:
    item = ctx.metadata.get(partition, tables.version_row(version))
    if item is None:
        raise NotFound(f"experiment {experiment_id!r} has no version {version}")
    return item


def _version(ctx: Context, partition: str, version: int, experiment_id: str) -> RegisteredModel:
    return RegisteredModel.model_validate(version_item(ctx, partition, version, experiment_id).data["model"])


def list_models(ctx: Context, experiment_id: str, *, limit: int, cursor: str | None = None) -> Page[RegisteredModel]:
    """Versions newest first; each page costs one bounded query whatever the total."""
    check_experiment_id(experiment_id)
    items, next_cursor = page(
        ctx.metadata, tables.experiment_partition(experiment_id), tables.VERSION_PREFIX, limit, cursor
    )
    return Page[RegisteredModel](
        items=[RegisteredModel.model_validate(i.data["model"]) for i in items], next_cursor=next_cursor
    )


def get_model(ctx: Context, experiment_id: str, version: int) -> RegisteredModel:
    check_experiment_id(experiment_id)
    check_version(version)
    return _version(ctx, tables.experiment_partition(experiment_id), version, experiment_id)


def latest_model(ctx: Context, experiment_id: str) -> RegisteredModel:
    check_experiment_id(experiment_id)
    items = ctx.metadata.query(tables.experiment_partition(experiment_id), tables.VERSION_PREFIX, limit=1)
    if not items:
        raise NotFound(f"experiment {experiment_id!r} has no registered versions")
    return RegisteredModel.model_validate(items[0].data["model"])


@contextmanager
def open_model(ctx: Context, experiment_id: str, version: int) -> Iterator[tuple[RegisteredModel, BinaryIO]]:
    """The registered version and a stream of its pinned bytes."""
    model = get_model(ctx, experiment_id, version)
    with ctx.artifacts.open_pinned(model.sha256) as stream:
        yield model, stream


def download_link(
    ctx: Context, experiment_id: str, version: int, *, expires_seconds: int = 900
) -> tuple[RegisteredModel, str | None]:
    """The version and a time-limited link to its bytes, if the store can issue one."""
    model = get_model(ctx, experiment_id, version)
    filename = model.artifact_name.rsplit("/", 1)[-1]
    return model, ctx.artifacts.pinned_link(model.sha256, filename=filename, expires_seconds=expires_seconds)
