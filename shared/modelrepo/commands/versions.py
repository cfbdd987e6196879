"""Versions: registering run artifacts as gapless versions, pinning their bytes, reading them."""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from modelrepo import collect, outbox, tables
from modelrepo.batching import GroupCommit, Ticket
from modelrepo.commands.uploads import get_artifact, list_run_artifacts, sha256_of
from modelrepo.errors import Busy, Conflict, Gone, InvalidInput, NotFound, ObjectChanged, ObjectMissing, Unprocessable
from modelrepo.limits import MAX_VERSION_BYTES, MAX_VERSION_FILES, check_idempotency_key, check_version
from modelrepo.model import (
    Approval,
    ApprovalStatus,
    Lineage,
    Page,
    Record,
    RegisteredModel,
    RunArtifact,
    check_actor,
    check_artifact_name,
    check_description,
    check_experiment_id,
    check_metrics,
    check_params,
    check_run_id,
    check_signature,
)
from modelrepo.ports import MAX_WRITES_PER_TRANSACTION, Item
from modelrepo.unit_of_work import Context, UnitOfWork, execute, filtered_page, principal, rfc3339

PIN_LOCK_STRIPES = 64


# A batch's transaction stays well below the clouds' 4 MB per transaction (version and event rows
# each carry the version's metadata, whose signature alone may be 64 KiB).
BATCH_BYTES = 2 * 1024 * 1024


class VersionMetadata(Record):
    """What a version says about itself beyond its bytes; metrics, params and signature are
    write-once (set at registration, or once later if they were not), the rest may change."""

    description: str | None = None
    metrics: dict[str, float] | None = None
    params: dict[str, str] | None = None
    signature: dict[str, Any] | None = None
    lineage: Lineage | None = None

    def checked(self) -> VersionMetadata:
        if self.description is not None:
            check_description(self.description)
        if self.metrics is not None:
            check_metrics(self.metrics)
        if self.params is not None:
            check_params(self.params)
        if self.signature is not None:
            check_signature(self.signature)
        return self

    def fields(self) -> dict[str, Any]:
        """The fields given, as RegisteredModel attributes."""
        return {name: value for name, value in self if value is not None}


@dataclass(frozen=True)
class Source:
    """What a version pins: one run artifact, or a folder of a run's artifacts (then `sha256` is the
    digest of the folder's manifest, `size` the sum of its files, `files` how many)."""

    experiment_id: str
    run_id: str
    name: str  # the artifact's name, or the folder's prefix
    sha256: str
    size: int
    run_artifact_id: str | None = None
    files: int | None = None

    @classmethod
    def of(cls, artifact: RunArtifact) -> Source:
        return cls(
            artifact.experiment_id,
            artifact.run_id,
            artifact.name,
            artifact.sha256,
            artifact.size,
            artifact.run_artifact_id,
        )

    @property
    def identity(self) -> str:
        """What an Idempotency-Key is bound to: the same key may only ever register this again."""
        return self.run_artifact_id or f"{self.run_id}/{self.name}@{self.sha256}"


@dataclass
class Registration:
    source: Source
    registered_by: str
    idempotency_key: str | None
    metadata: VersionMetadata = field(default_factory=VersionMetadata)
    leased_at: datetime | None = None  # when its bytes' lease was taken (None: tests that build one by hand)
    idempotency_window: timedelta | None = None  # None: the key counts forever
    # Who the host authenticated for the request; taken in the requester's thread, since another
    # thread may commit its batch.
    principal: str | None = field(default_factory=principal.get)

    def model(self, version: int, uow: UnitOfWork) -> RegisteredModel:
        return RegisteredModel(
            experiment_id=self.source.experiment_id,
            version=version,
            run_artifact_id=self.source.run_artifact_id,
            run_id=self.source.run_id,
            artifact_name=self.source.name,
            registered_by=self.registered_by,
            registered_at=uow.now,
            sha256=self.source.sha256,
            size=self.source.size,
            files=self.source.files,
            approval=Approval(status=ApprovalStatus(uow.ctx.default_approval)),
            **self.metadata.fields(),
        )

    @property
    def writes(self) -> int:
        """Rows one registration adds to the batch's transaction: version, event, idempotency key."""
        return 3 if self.idempotency_key is not None else 2

    @property
    def weight(self) -> int:
        """Bytes it adds to the batch's transaction, roughly: its metadata twice (version, event)."""
        extra = len(json.dumps(self.metadata.signature)) if self.metadata.signature else 0
        return 2 * (2048 + extra)


class ManifestEntry(Record):
    path: str  # relative to the version's folder
    sha256: str
    size: int


class Manifest(Record):
    """A folder version's files; pinned in the registry under its own digest."""

    files: list[ManifestEntry]

    def to_bytes(self) -> bytes:
        """Canonical JSON: the same files always give the same digest."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def check_prefix(prefix: str) -> str:
    """A folder of a run: '' (all of it) or a relative path ending in '/'."""
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise InvalidInput(f"prefix {prefix!r} must be a folder: end it with '/' (or give '' for the whole run)")
    check_artifact_name(prefix[:-1])
    return prefix


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
        metadata: VersionMetadata | None = None,
        idempotency_window: timedelta | None = None,
    ) -> RegisteredModel:
        """Give a run artifact the experiment's next version, by optimistic concurrency.

        Read the counter with its ETag, then write counter+1, the version row and its event in one
        conditional transaction; on conflict re-read and retry with jittered backoff until the
        deadline. Registrations of one experiment queued in this process at the same moment share
        that transaction (counter+k, k version rows and k events: group commit).
        """
        check_experiment_id(experiment_id)
        check_actor(registered_by)
        metadata = metadata or VersionMetadata()
        if description is not None:
            metadata = metadata.model_copy(update={"description": description})
        metadata.checked()
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        artifact = get_artifact(self.ctx, run_artifact_id)
        if artifact.experiment_id != experiment_id:
            raise Unprocessable(
                f"run artifact {run_artifact_id!r} belongs to experiment "
                f"{artifact.experiment_id!r}, not {experiment_id!r}"
            )
        source = Source.of(artifact)
        if (earlier := self._replayed(source, idempotency_key, idempotency_window)) is not None:
            return earlier
        leased = self.pin(artifact)
        return self._submit(Registration(source, registered_by, idempotency_key, metadata, leased, idempotency_window))

    def register_folder(
        self,
        experiment_id: str,
        run_id: str,
        prefix: str,
        registered_by: str,
        idempotency_key: str | None = None,
        metadata: VersionMetadata | None = None,
        idempotency_window: timedelta | None = None,
    ) -> RegisteredModel:
        """Register every current artifact of a run under `prefix` as one version: each file pinned
        once (shared with other versions), and a manifest of relative path to sha256 and size pinned
        beside them; the version row names the manifest. A file overwritten after it was recorded
        answers 409 and registers nothing."""
        check_experiment_id(experiment_id)
        check_run_id(run_id)
        check_actor(registered_by)
        check_prefix(prefix)
        metadata = (metadata or VersionMetadata()).checked()
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        files = [
            artifact
            for artifact in list_run_artifacts(self.ctx, run_id)
            if artifact.experiment_id == experiment_id and artifact.name.startswith(prefix)
        ]
        if not files:
            raise NotFound(f"run {run_id!r} of {experiment_id!r} has no current artifacts under {prefix!r}")
        if len(files) > MAX_VERSION_FILES:
            raise Unprocessable(f"a version holds at most {MAX_VERSION_FILES} files; {prefix!r} has {len(files)}")
        total = sum(artifact.size for artifact in files)
        if total > MAX_VERSION_BYTES:
            raise Unprocessable(f"a version holds at most {MAX_VERSION_BYTES} bytes; {prefix!r} has {total}")
        manifest = Manifest(
            files=[ManifestEntry(path=a.name[len(prefix) :], sha256=a.sha256, size=a.size) for a in files]
        )
        data = manifest.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        source = Source(experiment_id, run_id, prefix, digest, total, files=len(files))
        if (earlier := self._replayed(source, idempotency_key, idempotency_window)) is not None:
            return earlier
        leases = [self.pin(artifact) for artifact in files]
        leases.append(self._pin_manifest(digest, data))
        return self._submit(
            Registration(source, registered_by, idempotency_key, metadata, min(leases), idempotency_window)
        )

    def _replayed(self, source: Source, key: str | None, window: timedelta | None) -> RegisteredModel | None:
        if key is None:
            return None
        partition = tables.experiment_partition(source.experiment_id)
        item = self.ctx.metadata.get(partition, tables.idempotency_row(key))
        return _replay(self.ctx, partition, key, source, item, window, self.ctx.now())

    def _submit(self, request: Registration) -> RegisteredModel:
        partition = tables.experiment_partition(request.source.experiment_id)
        return self._queue(partition).submit(request)

    def _pin_manifest(self, digest: str, data: bytes) -> datetime:
        leased = collect.lease(self.ctx, digest)
        if not self.ctx.artifacts.has_pinned(digest):
            self.ctx.artifacts.put_pinned(digest, data)
        return leased

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
            for index, ticket in enumerate(batch):
                request = ticket.payload
                # A key was checked once before queueing; it may have been used meanwhile (a lost race
                # shows it), and a key with a window may have expired (then its row is replaced).
                if request.idempotency_key is None or (uow.attempt == 0 and request.idempotency_window is None):
                    continue
                item = uow.get(tables.idempotency_row(request.idempotency_key))
                try:
                    earlier = _replay(
                        self.ctx,
                        partition,
                        request.idempotency_key,
                        request.source,
                        item,
                        request.idempotency_window,
                        uow.now,
                    )
                except Conflict as conflict:
                    settled[index] = conflict
                    continue
                if earlier is not None:
                    settled[index] = earlier
            counter = uow.counter
            latest = int(counter.get("latest", 0))
            count = int(counter.get("versionCount", latest))
            for index, ticket in enumerate(batch):
                if index in settled:
                    continue
                request = ticket.payload
                if request.leased_at is not None:
                    try:
                        collect.check_lease(self.ctx, request.leased_at, uow.now)
                    except Busy as stale:
                        settled[index] = stale
                        continue
                latest += 1
                count += 1
                model = request.model(latest, uow)
                wire = model.to_json()
                sequence = uow.emit(
                    outbox.VERSION_REGISTERED,
                    version_subject(model.experiment_id, latest),
                    wire,
                    actor=request.registered_by,
                    action="model.registered",
                    about=f"version {latest}",
                    details={"source": request.source.identity, "sha256": request.source.sha256},
                    by_principal=request.principal,
                )
                uow.create(tables.version_row(latest), {"model": wire, "sequence": sequence})
                if request.idempotency_key is not None:
                    row = tables.idempotency_row(request.idempotency_key)
                    key = {"version": latest, "source": request.source.identity, "at": rfc3339(uow.now)}
                    if uow.read(row):
                        uow.save(row, key)  # absent, or expired and replaced
                    else:
                        uow.create(row, key)
                settled[index] = model
            if uow.events:
                uow.set_counter(latest=latest, latestLive=latest, versionCount=count)
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

    def pin(self, artifact: RunArtifact) -> datetime:
        """Make sure the artifact's bytes are in the registry, where no re-upload or delete can
        reach them, under a fresh lease (`modelrepo.collect`); returns the lease's time.

        Once per digest and half-lease in this process: registrations of one new artifact arriving
        together wait for one lease and one copy instead of each making its own, and later ones skip
        even the registry's check (a file system call, where 32 threads queue for the GIL again)."""
        digest = artifact.sha256
        if (leased := self._fresh_lease(digest)) is not None:
            return leased
        with self._pin_locks[hash(digest) % PIN_LOCK_STRIPES]:
            if (leased := self._fresh_lease(digest)) is not None:
                return leased
            leased = collect.lease(self.ctx, digest)
            if not self.ctx.artifacts.has_pinned(digest):
                _copy_into_registry(self.ctx, artifact)
            self._pinned.put(digest, leased)
            return leased

    def _fresh_lease(self, digest: str) -> datetime | None:
        leased: datetime | None = self._pinned.get(digest)
        if leased is not None and collect.is_fresh(leased, self.ctx.now()):
            return leased
        return None


def _next_batch(queue: deque[Ticket[Registration, RegisteredModel]]) -> list[Ticket[Registration, RegisteredModel]]:
    """The head of the queue and what follows it, as many as fit beside the counter in one
    transaction; a second request with an Idempotency-Key already in the batch waits its turn."""
    batch = [queue.popleft()]
    room = MAX_WRITES_PER_TRANSACTION - 1 - batch[0].payload.writes
    budget = BATCH_BYTES - batch[0].payload.weight
    keys = {batch[0].payload.idempotency_key} - {None}
    for ticket in list(queue):
        request = ticket.payload
        if request.writes > room or request.weight > budget:
            break
        if request.idempotency_key is not None and request.idempotency_key in keys:
            continue
        queue.remove(ticket)
        batch.append(ticket)
        room -= request.writes
        budget -= request.weight
        if request.idempotency_key is not None:
            keys.add(request.idempotency_key)
    return batch


def _replay(
    ctx: Context,
    partition: str,
    idempotency_key: str,
    source: Source,
    item: Item | None,
    window: timedelta | None = None,
    now: datetime | None = None,
) -> RegisteredModel | None:
    """The version an Idempotency-Key already registered, if any; the key's row is `item`. A key with
    a window counts only within it (MLflow clients retry without one: their key is the request)."""
    if item is None:
        return None
    if (
        window is not None
        and now is not None
        and now - datetime.fromisoformat(item.data.get("at", "1970-01-01T00:00:00+00:00")) > window
    ):
        return None
    registered = item.data.get("source", item.data.get("runArtifactId"))
    if registered != source.identity:
        what = f"folder {registered!r}" if "@" in str(registered) else f"run artifact {registered!r}"
        raise Conflict(
            f"Idempotency-Key {idempotency_key!r} was already used to register {what} as version {item.data['version']}"
        )
    return _version(ctx, partition, item.data["version"], source.experiment_id)


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


@dataclass(frozen=True)
class VersionFilter:
    """Which versions a listing shows. By default: every version neither archived nor deleted."""

    status: ApprovalStatus | None = None
    tags: tuple[tuple[str, str], ...] = ()
    registered_after: datetime | None = None
    registered_before: datetime | None = None
    archived: bool = False  # show archived versions too
    deleted: bool = False  # show deleted versions (tombstones) too

    def keeps(self, model: RegisteredModel) -> bool:
        if model.deleted is not None and not self.deleted:
            return False
        if model.archived_at is not None and not self.archived:
            return False
        if self.status is not None and model.approval.status is not self.status:
            return False
        if any(model.tags.get(key) != value for key, value in self.tags):
            return False
        if self.registered_after is not None and model.registered_at <= self.registered_after:
            return False
        return self.registered_before is None or model.registered_at < self.registered_before


def list_models(
    ctx: Context,
    experiment_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    where: VersionFilter | None = None,
) -> Page[RegisteredModel]:
    """Versions newest first. Unfiltered, a page is one bounded query whatever the total; filters
    read the versions in order and judge each (no index serves them), at most SCAN_BUDGET per page."""
    check_experiment_id(experiment_id)
    where = where or VersionFilter()
    partition = tables.experiment_partition(experiment_id)
    items, next_cursor = filtered_page(
        ctx.metadata,
        partition,
        tables.VERSION_PREFIX,
        limit,
        cursor,
        lambda item: where.keeps(RegisteredModel.model_validate(item.data["model"])),
    )
    return Page[RegisteredModel](
        items=[RegisteredModel.model_validate(i.data["model"]) for i in items], next_cursor=next_cursor
    )


def get_model(ctx: Context, experiment_id: str, version: int) -> RegisteredModel:
    check_experiment_id(experiment_id)
    check_version(version)
    return _version(ctx, tables.experiment_partition(experiment_id), version, experiment_id)


def latest_model(ctx: Context, experiment_id: str) -> RegisteredModel:
    """The newest version that is neither archived nor deleted."""
    check_experiment_id(experiment_id)
    partition = tables.experiment_partition(experiment_id)
    counter = ctx.metadata.get(partition, tables.COUNTER_ROW)
    if counter is None or not counter.data.get("latest"):
        raise NotFound(f"experiment {experiment_id!r} has no registered versions")
    latest = int(counter.data.get("latestLive", counter.data["latest"]))
    if not latest:
        raise NotFound(f"experiment {experiment_id!r} has no live versions: each is archived or deleted")
    return _version(ctx, partition, latest, experiment_id)


def live_model(ctx: Context, experiment_id: str, version: int) -> RegisteredModel:
    """A version whose bytes may be served: a deleted version's are gone (410)."""
    model = get_model(ctx, experiment_id, version)
    if model.deleted is not None:
        raise Gone(f"version {version} of {experiment_id!r} was deleted at {model.deleted.at.isoformat()}")
    return model


def manifest_of(ctx: Context, model: RegisteredModel) -> Manifest:
    """A version's files: a folder version's manifest, or its one file under its own name."""
    if model.files is None:
        name = model.artifact_name.rsplit("/", 1)[-1]
        return Manifest(files=[ManifestEntry(path=name, sha256=model.sha256, size=model.size)])
    with ctx.artifacts.open_pinned(model.sha256) as stream:
        data = b"".join(iter(lambda: stream.read(1 << 20), b""))
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise ObjectMissing(
            f"the manifest of version {model.version} of {model.experiment_id!r} does not match its digest"
        )
    return Manifest.model_validate_json(data)


def file_of(ctx: Context, experiment_id: str, version: int, path: str) -> tuple[RegisteredModel, ManifestEntry]:
    """One file of a live version, by its path in the version."""
    model = live_model(ctx, experiment_id, version)
    for entry in manifest_of(ctx, model).files:
        if entry.path == path:
            return model, entry
    raise NotFound(f"version {version} of {experiment_id!r} has no file {path!r}")


@contextmanager
def open_model(ctx: Context, experiment_id: str, version: int) -> Iterator[tuple[RegisteredModel, BinaryIO]]:
    """The registered version and a stream of its pinned bytes (one file; see manifest_of for folders)."""
    model = live_model(ctx, experiment_id, version)
    if model.files is not None:
        raise Unprocessable(
            f"version {version} of {experiment_id!r} is a folder of {model.files} files: read them one by one, "
            "or download the version as an archive"
        )
    with ctx.artifacts.open_pinned(model.sha256) as stream:
        yield model, stream


def download_link(
    ctx: Context, experiment_id: str, version: int, *, expires_seconds: int = 900
) -> tuple[RegisteredModel, str | None]:
    """The version and a time-limited link to its bytes, if the store can issue one."""
    model = live_model(ctx, experiment_id, version)
    filename = model.artifact_name.rsplit("/", 1)[-1]
    return model, ctx.artifacts.pinned_link(model.sha256, filename=filename, expires_seconds=expires_seconds)
