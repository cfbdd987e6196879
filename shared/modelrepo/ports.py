"""The two ports every backend implements, kept to the primitives the clouds offer natively.

`MetadataStore` is a table of JSON documents addressed by (partition, row) with an opaque ETag per
row and one primitive that matters: an atomic, conditional multi-row write within one partition
(DynamoDB TransactWriteItems, an Azure Table entity-group transaction, a SQLite transaction).
Every rule built on top of it lives in `modelrepo.service`.

`ArtifactStore` is the bucket users drop files into plus a private, content-addressed registry area
that holds the pinned bytes of registered versions.

Row and partition keys handed to a MetadataStore are made by the core from the characters
`[A-Za-z0-9._~-]` only, so they are valid keys on every backend without escaping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from modelrepo.events import ObjectCreated

# --- MetadataStore -------------------------------------------------------------------------------

# The native limit of both clouds: DynamoDB TransactWriteItems and an Azure entity-group transaction.
MAX_WRITES_PER_TRANSACTION = 100


@dataclass(frozen=True)
class Item:
    partition: str
    row: str
    data: Mapping[str, Any]
    etag: str


@dataclass(frozen=True)
class Put:
    """Create or replace a row.

    `if_absent`: the row must not exist. `if_match`: the row must exist with this ETag.
    Neither: unconditional upsert.
    """

    partition: str
    row: str
    data: Mapping[str, Any]
    if_match: str | None = None
    if_absent: bool = False

    def __post_init__(self) -> None:
        if self.if_absent and self.if_match is not None:
            raise ValueError("a Put cannot be both if_absent and if_match")

    @classmethod
    def over(cls, current: Item | None, partition: str, row: str, data: Mapping[str, Any]) -> Put:
        """Replace `current` only if nobody changed it since it was read; create the row only if it
        was absent (`current` None): the optimistic write every guarded change makes."""
        if current is None:
            return cls(partition, row, data, if_absent=True)
        return cls(partition, row, data, if_match=current.etag)


@dataclass(frozen=True)
class Delete:
    """Delete a row; with `if_match`, only if it still has that ETag (a missing row then fails)."""

    partition: str
    row: str
    if_match: str | None = None


Write = Put | Delete


class MetadataStore(ABC):
    """A table store whose primitive is the atomic conditional write."""

    @abstractmethod
    def get(self, partition: str, row: str) -> Item | None:
        """A strongly consistent point read."""

    @abstractmethod
    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        """Rows of one partition whose row key starts with `prefix`, ascending by row key.

        `after` is an exclusive start row key; the cost must depend on `limit`, not on the
        partition's size.
        """

    @abstractmethod
    def transact(self, writes: Sequence[Write]) -> None:
        """Apply all writes or none.

        All writes target one partition and distinct rows, at most MAX_WRITES_PER_TRANSACTION.
        Raises ConditionFailed if any condition does not hold (nothing is written), OutcomeUnknown
        if the write may have committed, Throttled if the backend keeps refusing work.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, not every store holds connections
        """Release connections; the default has none."""


def check_transaction(writes: Sequence[Write]) -> str:
    """The partition of a valid transaction; every adapter calls this before writing anything."""
    if not writes:
        raise ValueError("a transaction needs at least one write")
    if len(writes) > MAX_WRITES_PER_TRANSACTION:
        raise ValueError(f"a transaction holds at most {MAX_WRITES_PER_TRANSACTION} writes")
    partition = writes[0].partition
    if any(w.partition != partition for w in writes):
        raise ValueError("all writes of a transaction must target one partition")
    if len({w.row for w in writes}) != len(writes):
        raise ValueError("a transaction may write each row only once")
    return partition


# --- ArtifactStore -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    """One version of one object in the uploads area.

    `sha256` and `sequencer` are filled by stores that know them cheaply (the folder store
    computes the digest to make its ETag); cloud stores leave them None.
    """

    key: str
    size: int
    etag: str
    modified_at: datetime
    sha256: str | None = None
    sequencer: str | None = None


ProgressCallback = Callable[[int], None]


@dataclass
class ObjectListing:
    objects: list[ObjectInfo] = field(default_factory=list)
    next_after: str | None = None


class ArtifactStore(ABC):
    """The uploads bucket and the registry area where registered bytes are pinned."""

    def close(self) -> None:  # noqa: B027 - optional hook, not every store holds files open
        """Release held files or connections; the default holds none."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The current version of an uploaded object, or None."""

    @abstractmethod
    def open(self, key: str, *, etag: str) -> AbstractContextManager[BinaryIO]:
        """Read exactly version `etag` of an uploaded object.

        Raises ObjectMissing if it is gone and ObjectChanged if another version replaced it (a
        store that can only tell at the end of the stream raises on the final read).
        """

    @abstractmethod
    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        """Upload an object atomically (readers never see a partial object)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an uploaded object; removing a missing one is not an error."""

    @abstractmethod
    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        """Uploaded objects in key order, one page at a time: at most `limit` objects, and in
        `next_after` where the next page starts (None after the last page).

        `after` is None for the first page, then the previous page's `next_after` for the same
        prefix: a cursor, opaque to callers and stored by the reconcile sweep as it is. Stores that
        can start a listing after a key use the last key; others use their own continuation token.
        Each page costs the store a bounded amount of work, however far into the listing it is.
        """

    @abstractmethod
    def pin(self, key: str, *, etag: str, digest: str) -> None:
        """Copy version `etag` of an uploaded object into the registry under its sha256 `digest`.

        Server-side where the backend can; idempotent; raises ObjectMissing / ObjectChanged like
        `open`. The registry entry is never modified afterwards.
        """

    @abstractmethod
    def put_pinned(self, digest: str, data: bytes) -> None:
        """Store small bytes the core made itself (a version's manifest) under their sha256 `digest`;
        idempotent; the caller has checked the digest."""

    @abstractmethod
    def has_pinned(self, digest: str) -> bool:
        """Whether the registry holds bytes under this digest."""

    @abstractmethod
    def open_pinned(self, digest: str) -> AbstractContextManager[BinaryIO]:
        """Read pinned bytes; raises ObjectMissing if the registry has no such digest."""

    @abstractmethod
    def discard_pinned(self, digest: str) -> None:
        """Remove a registry entry: bytes that failed verification, or bytes that the collector
        (`modelrepo.collect`) found no version needs any longer. Removing a missing one is fine."""

    @abstractmethod
    def list_pinned(self, *, after: str | None = None, limit: int = 1000) -> tuple[tuple[str, ...], str | None]:
        """The registry's digests, a page at a time; the second value (opaque) continues the listing."""

    @abstractmethod
    def uri_of(self, key: str) -> str:
        """The URI users know an uploaded object by (s3://bucket/key, the blob's URL, a file URI)."""

    @abstractmethod
    def key_of_uri(self, uri: str) -> str | None:
        """The key an upload URI names in this store's uploads area (the inverse of `uri_of`, also
        for the other spellings its users write: wasbs://, a plain path); None if it names none."""

    def pinned_link(self, digest: str, *, filename: str, expires_seconds: int) -> str | None:
        """A time-limited URL to pinned bytes (presigned URL, SAS), or None to stream them instead.

        Cloud hosts cannot stream large bodies through their HTTP front doors, so their stores
        return a link and the API answers with a redirect to it.
        """
        return None


def iter_chunks(stream: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Read a stream in bounded chunks so that large artifacts never sit in memory whole."""
    while chunk := stream.read(chunk_size):
        yield chunk


# --- DeadLetterQueue -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """An upload notification that failed its bounded attempts and was parked.

    `events` holds the upload facts it carried (an S3 message may carry several; none if it could
    not be decoded). `detail` says why it was parked where the backend knows; never object bytes.
    """

    handle: str
    source: str
    events: tuple[ObjectCreated, ...]
    failed_at: datetime | None = None
    detail: str = ""


class DeadLetterQueue(ABC):
    """Where a host parks upload notifications it gave up on: an SQS DLQ, the blob trigger's poison
    queue or Event Grid's dead-letter container, a local folder."""

    @abstractmethod
    def peek(self, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` parked letters, left in place."""

    @abstractmethod
    def remove(self, letter: DeadLetter) -> None:
        """Drop a letter that has been dealt with (replayed successfully)."""
