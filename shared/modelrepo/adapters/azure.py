"""Azure adapters: AzureBlobArtifactStore (Blob Storage), AzureTableMetadataStore (Table Storage),
AzureDeadLetterQueue (the blob trigger's poison queue and Event Grid's dead-letter container), and
the settings and connection both the Functions host and `modelrepo ... --backend azure` use.

Only the primitives live here; every rule is in `modelrepo.service`. SDK errors are translated into
`modelrepo.errors` at this boundary so that no handler ever sees an azure.* exception.

Writes to Table Storage go out once (`retry_total=0`): the SDK would otherwise resend a batch
after a 500/504 whose first attempt may have committed, and the 409/412 of the resend would look
like a lost race. The core retries instead, and its request token recognises its own write.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import count, islice
from typing import Any, BinaryIO, Self, cast
from urllib.parse import quote, unquote, urlsplit

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode
from azure.identity import DefaultAzureCredential
from azure.storage.blob import (
    BlobClient,
    BlobProperties,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    StorageStreamDownloader,
    UserDelegationKey,
    generate_blob_sas,
)
from azure.storage.blob import ExponentialRetry as BlobExponentialRetry
from azure.storage.queue import ExponentialRetry as QueueExponentialRetry
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelrepo.api import DEFAULT_MAX_BODY_BYTES, describe_validation_error
from modelrepo.backends import Backend
from modelrepo.errors import (
    ConditionFailed,
    InvalidInput,
    ObjectChanged,
    ObjectMissing,
    OutcomeUnknown,
    StorageError,
    Throttled,
)
from modelrepo.events import ObjectCreated
from modelrepo.ports import (
    ArtifactStore,
    DeadLetter,
    DeadLetterQueue,
    Delete,
    Item,
    MetadataStore,
    ObjectInfo,
    ObjectListing,
    ProgressCallback,
    Write,
    check_transaction,
)
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository

# Blocks of 4 MiB: uploads above 4 MiB are staged block by block and committed at once, so readers
# never see a partial object and memory stays bounded.
BLOCK_BYTES = 4 * 1024 * 1024
# The SDK's own retry policy and timeouts, for everything but table writes (see the module docstring).
# Tables: exponential backoff 0.4 s, 0.8 s, 1.6 s, 3.2 s (capped at 8 s), without jitter; the
# core's retries above it jitter. Blob and queue clients take these options for timeouts and
# retry_total only: their own retry policy is built below.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 4,
    "retry_backoff_factor": 0.4,
    "retry_backoff_max": 8,
    "connection_timeout": 10,
    "read_timeout": 60,
}
# Blob and queue retries: three, after 2, 4 and 8 s, each +-1 s of jitter (the storage SDKs' own
# default waits 15 s and more, too long inside an HTTP request or a trigger invocation).
STORAGE_RETRY_TOTAL, STORAGE_INITIAL_BACKOFF, STORAGE_INCREMENT_BASE, STORAGE_JITTER = 3, 0, 2, 1
# A Table string property holds at most 64 KiB (32 Ki UTF-16 units); documents are ASCII JSON
# split over properties doc, doc1, doc2 ... of this many characters; 16 of them stay under the
# 1 MiB an entity may hold.
CHUNK_CHARS = 30_000
MAX_CHUNKS = 16
REGISTRY_PREFIX = "sha256/"
COPY_POLL_SECONDS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
COPY_DEADLINE_SECONDS = 600.0
# List Blobs answers at most 5,000 blobs a call. A listing's `next_after` is its continuation token
# behind this tag, which no position saved as a blob name (before tokens were used) begins with.
MAX_LIST_RESULTS = 5000
LISTING_TOKEN = "token:"


@dataclass(frozen=True)
class AzureStorage:
    """The SDK service clients of one storage account, built with the same policy."""

    blobs: BlobServiceClient
    tables: TableServiceClient
    queues: QueueServiceClient

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> AzureStorage:
        """For Azurite and development (`UseDevelopmentStorage=true` works too).

        `options` reach every client on top of the defaults (tests pass a fault-injecting `transport`).
        """
        return cls(
            BlobServiceClient.from_connection_string(connection_string, **(_blob_options() | options)),
            TableServiceClient.from_connection_string(connection_string, **(CLIENT_OPTIONS | options)),
            QueueServiceClient.from_connection_string(connection_string, **(_queue_options() | options)),
        )

    @classmethod
    def from_identity(
        cls, blob_service_uri: str, table_service_uri: str, queue_service_uri: str, credential: TokenCredential
    ) -> AzureStorage:
        """For production: Entra ID tokens (managed identity), no account keys anywhere."""
        return cls(
            BlobServiceClient(blob_service_uri, credential=credential, **_blob_options()),
            TableServiceClient(table_service_uri, credential=credential, **CLIENT_OPTIONS),
            QueueServiceClient(queue_service_uri, credential=credential, **_queue_options()),
        )


def _blob_options() -> dict[str, Any]:
    return {
        **CLIENT_OPTIONS,
        "max_single_put_size": BLOCK_BYTES,
        "max_block_size": BLOCK_BYTES,
        "retry_policy": BlobExponentialRetry(
            initial_backoff=STORAGE_INITIAL_BACKOFF,
            increment_base=STORAGE_INCREMENT_BASE,
            retry_total=STORAGE_RETRY_TOTAL,
            random_jitter_range=STORAGE_JITTER,
        ),
    }


def _queue_options() -> dict[str, Any]:
    retry = QueueExponentialRetry(
        initial_backoff=STORAGE_INITIAL_BACKOFF,
        increment_base=STORAGE_INCREMENT_BASE,
        retry_total=STORAGE_RETRY_TOTAL,
        random_jitter_range=STORAGE_JITTER,
    )
    return {**CLIENT_OPTIONS, "retry_policy": retry}


# --- MetadataStore -------------------------------------------------------------------------------


def _check_key(key: str) -> str:
    """The core only hands out `[A-Za-z0-9._~-]` keys; anything else is a bug, never escaped silently."""
    if not key or not all(c.isascii() and (c.isalnum() or c in "._~-") for c in key):
        raise ValueError(f"{key!r} is not a key the core would make")
    return key


def _prefix_end(prefix: str) -> str | None:
    """The smallest key above every key that starts with `prefix`, in printable ASCII.

    '~' is the largest character of the core's alphabet, so 'ver~' ends below 'ves'; a prefix of
    only '~' has no end.
    """
    stem = prefix.rstrip("~")
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


def _entity(partition: str, row: str, data: Mapping[str, Any]) -> dict[str, Any]:
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"a document of {len(text)} characters does not fit in one table entity")
    entity = {"PartitionKey": _check_key(partition), "RowKey": _check_key(row)}
    entity.update({f"doc{i or ''}": chunk for i, chunk in enumerate(chunks)})
    return entity


def _item(entity: Mapping[str, Any]) -> Item:
    parts = []
    for i in range(MAX_CHUNKS):
        chunk = entity.get(f"doc{i or ''}")
        if chunk is None:
            break
        parts.append(chunk)
    metadata = cast(Mapping[str, Any], getattr(entity, "metadata", {}))
    return Item(entity["PartitionKey"], entity["RowKey"], json.loads("".join(parts)), metadata["etag"])


@contextmanager
def _storage_errors(doing: str, *, write: bool = False) -> Iterator[None]:
    """Translate what is left of an SDK error after the specific cases (404/409/412) were handled.

    Refused or throttled work is Throttled; a write that got no clear answer (no response, 500
    OperationTimedOut, 504: "may or may not have succeeded") is OutcomeUnknown; anything else
    (403, a missing table or container) is a StorageError that names what was being done.
    """
    try:
        yield
    except ServiceRequestError as error:  # never sent: nothing can have been applied
        raise Throttled(f"{doing}: storage could not be reached ({type(error).__name__})") from None
    except ServiceResponseError as error:
        if write:
            raise OutcomeUnknown(f"{doing}: no answer from storage ({type(error).__name__})") from None
        raise Throttled(f"{doing}: no answer from storage ({type(error).__name__})") from None
    except HttpResponseError as error:
        status = error.status_code or 0
        described = f"{status} {_error_code(error)}".strip()
        if status in (429, 503):
            raise Throttled(f"{doing}: storage is busy ({described})") from None
        if status >= 500:
            if write:
                raise OutcomeUnknown(f"{doing}: storage answered {described}") from None
            raise Throttled(f"{doing}: storage answered {described}") from None
        raise StorageError(f"{doing}: storage refused with {described}") from None


def _error_code(error: HttpResponseError) -> str:
    """The service's error code ('TableNotFound'); the SDKs give it as a str enum or a str."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _is_missing_table(error: HttpResponseError) -> bool:
    return _error_code(error) == "TableNotFound"


class AzureTableMetadataStore(MetadataStore):
    """One table; PartitionKey/RowKey are the core's keys, `doc*` properties hold the JSON document.

    The counter and the version rows share the experiment's PartitionKey, so a registration is one
    entity-group transaction guarded by the counter's ETag.
    """

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, partition: str, row: str) -> Item | None:
        with _storage_errors(f"reading row {row!r} of {partition!r}"):
            try:
                entity = self._table.get_entity(_check_key(partition), _check_key(row))
            except ResourceNotFoundError as error:
                if _is_missing_table(error):
                    raise
                return None
        return _item(entity)

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        conditions = ["PartitionKey eq @partition"]
        parameters = {"partition": _check_key(partition)}
        if prefix:
            conditions.append("RowKey ge @prefix")
            parameters["prefix"] = _check_key(prefix)
            if end := _prefix_end(prefix):
                conditions.append("RowKey lt @end")
                parameters["end"] = end
        if after is not None:
            conditions.append("RowKey gt @after")
            parameters["after"] = _check_key(after)
        with _storage_errors(f"querying {partition!r}"):
            pages = self._table.query_entities(
                " and ".join(conditions), parameters=parameters, results_per_page=min(limit, 1000)
            )
            # The service may end a page early with a continuation token; islice follows it only
            # until `limit` rows are in hand, so the cost stays bounded by `limit`.
            return [_item(entity) for entity in islice(pages, limit)]

    def transact(self, writes: Sequence[Write]) -> None:
        partition = check_transaction(writes)
        with _storage_errors(f"writing to {partition!r}", write=True):
            try:
                if len(writes) == 1 and isinstance(writes[0], Delete) and writes[0].if_match is None:
                    # Deleting a missing row unconditionally is not an error; a batch would make it one.
                    self._table.delete_entity(_check_key(partition), _check_key(writes[0].row), retry_total=0)
                else:
                    self._table.submit_transaction([_operation(w) for w in writes], retry_total=0)
            except (TableTransactionError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
                if error.status_code not in (404, 409, 412) or _is_missing_table(error):
                    raise
                raise ConditionFailed(f"a condition of the transaction on {partition!r} does not hold") from None

    def close(self) -> None:
        self._table.close()


def _operation(write: Write) -> tuple[Any, ...]:
    if isinstance(write, Delete):
        key = {"PartitionKey": _check_key(write.partition), "RowKey": _check_key(write.row)}
        if write.if_match is None:
            return ("delete", key)
        return ("delete", key, {"etag": write.if_match, "match_condition": MatchConditions.IfNotModified})
    entity = _entity(write.partition, write.row, write.data)
    if write.if_absent:
        return ("create", entity)
    if write.if_match is not None:
        options = {"mode": UpdateMode.REPLACE, "etag": write.if_match, "match_condition": MatchConditions.IfNotModified}
        return ("update", entity, options)
    return ("upsert", entity, {"mode": UpdateMode.REPLACE})


# --- ArtifactStore -------------------------------------------------------------------------------


class _DownloadReader:
    """A file-like view of a download that translates SDK errors raised mid-stream."""

    def __init__(self, download: StorageStreamDownloader[bytes], key: str) -> None:
        self._download = download
        self._key = key

    def read(self, size: int = -1) -> bytes:
        with _storage_errors(f"reading {self._key!r}"):
            try:
                return self._download.read(size)
            except ResourceModifiedError:
                raise ObjectChanged(f"object {self._key!r} changed while it was read") from None
            except ResourceNotFoundError:
                raise ObjectMissing(f"object {self._key!r} was deleted while it was read") from None


class AzureBlobArtifactStore(ArtifactStore):
    """Uploads container + a separate private registry container for pinned bytes.

    Registry writes land in their own container, so they never look like uploads to the blob
    trigger, and they are create-only: a pinned blob is never overwritten.
    """

    def __init__(self, service: BlobServiceClient, uploads: str, registry: str) -> None:
        self._service = service
        self._uploads = service.get_container_client(uploads)
        self._registry = service.get_container_client(registry)
        self._delegation: UserDelegationKey | None = None
        self._delegation_lock = threading.Lock()

    def _blob(self, key: str) -> BlobClient:
        return self._uploads.get_blob_client(key)

    def _pinned(self, digest: str) -> BlobClient:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{digest!r} is not a sha256 hex digest")
        return self._registry.get_blob_client(REGISTRY_PREFIX + digest)

    # --- uploads ---------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        with _storage_errors(f"reading the properties of {key!r}"):
            try:
                properties = self._blob(key).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return ObjectInfo(key=key, size=properties.size, etag=properties.etag, modified_at=properties.last_modified)

    @contextmanager
    def open(self, key: str, *, etag: str) -> Iterator[BinaryIO]:
        with _storage_errors(f"reading {key!r}"):
            try:
                download = self._blob(key).download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
            except ResourceNotFoundError:
                raise ObjectMissing(f"no object {key!r}") from None
            except ResourceModifiedError:
                # Azure answers a conditional read of a missing blob with 412 as well: tell them apart.
                if self.head(key) is None:
                    raise ObjectMissing(f"no object {key!r}") from None
                raise ObjectChanged(f"object {key!r} is no longer version {etag}") from None
        yield cast(BinaryIO, _DownloadReader(download, key))

    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        sent = 0

        def hook(current: int, total: int | None) -> None:
            nonlocal sent
            if progress is not None and current > sent:
                progress(current - sent)
            sent = max(sent, current)

        with _storage_errors(f"uploading {key!r}"):
            result = self._blob(key).upload_blob(data, overwrite=True, progress_hook=hook)
        # The upload's own answer names the version it created; a HEAD could see a later one.
        return ObjectInfo(key=key, size=sent, etag=result["etag"], modified_at=result["last_modified"])

    def delete(self, key: str) -> None:
        with _storage_errors(f"deleting {key!r}"), suppress(ResourceNotFoundError):
            self._blob(key).delete_blob(delete_snapshots="include")

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        """One List Blobs call per page: `next_after` carries the service's continuation token, and
        the next page resumes from it. (Blob listing has no portable 'start after a name': resuming
        by name re-listed from the prefix for every page, so a sweep of n blobs cost n²/page calls.)

        An `after` without the token's tag is a blob name: a sweep position saved before listings
        resumed from tokens. Its page is found from the prefix, once; the pages after it use tokens.
        """
        token = after.removeprefix(LISTING_TOKEN) if after and after.startswith(LISTING_TOKEN) else None
        after_name = after if after and token is None else None
        with _storage_errors(f"listing {prefix!r}"):
            listing = self._uploads.list_blobs(
                name_starts_with=prefix or None, results_per_page=min(limit, MAX_LIST_RESULTS)
            )
            pages = cast("PageIterator[BlobProperties]", listing.by_page(continuation_token=token))
            blobs: list[BlobProperties] = []
            for page in pages:
                blobs = [b for b in page if after_name is None or b.name > after_name]
                if blobs or after_name is None:
                    break
            following = pages.continuation_token
        # List Blobs gives ETags unquoted, HEAD and PUT quoted: one version must have one ETag (it
        # is part of the artifact's identity), so listings use the quoted form too.
        objects = [
            ObjectInfo(key=b.name, size=b.size, etag=quoted_etag(b.etag) or b.etag, modified_at=b.last_modified)
            for b in blobs
        ]
        return ObjectListing(objects, f"{LISTING_TOKEN}{following}" if following else None)

    # --- registry --------------------------------------------------------------------------------

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        """Server-side copy of exactly version `etag`, create-only, waiting until it has finished."""
        target, source = self._pinned(digest), self._blob(key)
        with _storage_errors(f"pinning {key!r}"):
            if self._copy_state(target) == "done":
                return
            source_url = f"{source.url}?{self._read_sas(source, timedelta(minutes=15))}"
            try:
                target.start_copy_from_url(
                    source_url,
                    source_etag=etag,
                    source_match_condition=MatchConditions.IfNotModified,
                    match_condition=MatchConditions.IfMissing,
                )
            except ResourceExistsError:
                pass  # another registration is pinning the same bytes; wait for its copy below
            except HttpResponseError as error:
                if error.status_code not in (404, 412):
                    raise
                if self.head(key) is None:
                    raise ObjectMissing(f"no object {key!r}") from None
                raise ObjectChanged(f"object {key!r} is no longer version {etag}") from None
            deadline = time.monotonic() + COPY_DEADLINE_SECONDS
            for attempt in count():
                state = self._copy_state(target)
                if state == "done":
                    return
                if state == "missing":
                    raise ObjectChanged(f"copying {key!r} into the registry failed; it was discarded")
                if time.monotonic() > deadline:
                    raise OutcomeUnknown(f"copying {key!r} into the registry is still pending")
                time.sleep(COPY_POLL_SECONDS[min(attempt, len(COPY_POLL_SECONDS) - 1)])

    @staticmethod
    def _copy_state(target: BlobClient) -> str:
        """'done', 'pending' or 'missing'; a failed or aborted copy is deleted and reads as missing."""
        try:
            copy = target.get_blob_properties().copy
        except ResourceNotFoundError:
            return "missing"
        if copy.status in (None, "success"):
            return "done"
        if copy.status == "pending":
            return "pending"
        with suppress(ResourceNotFoundError):
            target.delete_blob()
        return "missing"

    def has_pinned(self, digest: str) -> bool:
        with _storage_errors(f"looking up pinned {digest}"):
            return self._copy_state(self._pinned(digest)) == "done"

    @contextmanager
    def open_pinned(self, digest: str) -> Iterator[BinaryIO]:
        target = self._pinned(digest)
        with _storage_errors(f"reading pinned {digest}"):
            try:
                download = target.download_blob()
            except ResourceNotFoundError:
                raise ObjectMissing(f"the registry holds no bytes with sha256 {digest}") from None
        yield cast(BinaryIO, _DownloadReader(download, target.blob_name))

    def discard_pinned(self, digest: str) -> None:
        with _storage_errors(f"discarding pinned {digest}"), suppress(ResourceNotFoundError):
            self._pinned(digest).delete_blob()

    def pinned_link(self, digest: str, *, filename: str, expires_seconds: int) -> str | None:
        target = self._pinned(digest)
        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        with _storage_errors(f"signing a link to pinned {digest}"):
            sas = self._read_sas(target, timedelta(seconds=expires_seconds), content_disposition=disposition)
        return f"{target.url}?{sas}"

    # --- shared access signatures ----------------------------------------------------------------

    def _read_sas(self, blob: BlobClient, lifetime: timedelta, **headers: str) -> str:
        """A read-only SAS for one blob: signed with the account key under a connection string, or
        with a user delegation key (Entra ID, no account key) under a managed identity."""
        now = datetime.now(UTC)
        start, expiry = now - timedelta(minutes=5), now + lifetime
        common: dict[str, Any] = {
            "account_name": blob.account_name,
            "container_name": blob.container_name,
            "blob_name": blob.blob_name,
            "permission": BlobSasPermissions(read=True),
            "start": start,
            "expiry": expiry,
            "protocol": "https" if blob.scheme == "https" else "https,http",
            **headers,
        }
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            return generate_blob_sas(account_key=account_key, **common)
        return generate_blob_sas(user_delegation_key=self._delegation_key(expiry), **common)

    def _delegation_key(self, needed_until: datetime) -> UserDelegationKey:
        """One user delegation key for many links, renewed before the links would outlive it."""
        with self._delegation_lock:
            key = self._delegation
            if key is None or datetime.fromisoformat(str(key.signed_expiry)) < needed_until:
                now = datetime.now(UTC)
                # A delegation key lives at most 7 days; ask for a day's worth of links at a time.
                expiry = min(max(needed_until, now + timedelta(days=1)), now + timedelta(days=7))
                key = self._service.get_user_delegation_key(now - timedelta(minutes=5), expiry)
                self._delegation = key
            return key


def create_container(service: BlobServiceClient, name: str) -> ContainerClient:
    """Create a private container if it does not exist (Bicep does this in Azure; tests and
    `func start` against Azurite need it done by code)."""
    container = service.get_container_client(name)
    with suppress(ResourceExistsError):
        container.create_container()
    return container


# --- Event Grid ----------------------------------------------------------------------------------

BLOB_CREATED = "Microsoft.Storage.BlobCreated"


def quoted_etag(value: object) -> str | None:
    """An ETag in the form the Blob SDK uses (quoted), whichever form a host or message carried."""
    if not isinstance(value, str) or not value.strip('"'):
        return None
    return f'"{value.strip(chr(34))}"'


def parse_time(value: object) -> datetime | None:
    """ISO 8601 (Event Grid, the Functions host) or RFC 1123 (HTTP headers), as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def blob_name_from_url(url: str, container: str) -> str:
    """The blob name in a blob URL, exactly as uploaded.

    Blob URLs percent-encode the name, so it is decoded with `unquote` ('+' is a plus sign here, not
    a space). Azure puts the container first in the path; Azurite puts the account name before it.
    """
    path = urlsplit(url).path
    prefix = f"/{container}/"
    if not path.startswith(prefix):
        path = "/" + path[1:].partition("/")[2]
        if not path.startswith(prefix):
            raise ValueError(f"{url!r} is not a blob of container {container!r}")
    name = unquote(path[len(prefix) :], errors="strict")
    if not name:
        raise ValueError(f"{url!r} names no blob")
    return name


def object_created_from_event_grid(event: Mapping[str, Any], container: str, actor: str) -> ObjectCreated:
    """One BlobCreated event (Event Grid schema) of the uploads container as the neutral fact.

    Used wherever such an event is read: Event Grid's dead letters and the simulated host in the tests.
    Raises ValueError (or KeyError/TypeError) for anything else.
    """
    if event.get("eventType") != BLOB_CREATED:
        raise ValueError(f"not a BlobCreated event: {event.get('eventType')!r}")
    data = event["data"]
    etag, uploaded_at, size = quoted_etag(data.get("eTag")), parse_time(event.get("eventTime")), data["contentLength"]
    if etag is None or uploaded_at is None:
        raise ValueError("the event has no usable eTag or eventTime")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"contentLength {size!r} is not a size")
    sequencer = data.get("sequencer")
    return ObjectCreated(
        key=blob_name_from_url(str(data["url"]), container),
        etag=etag,
        size=size,
        uploaded_at=uploaded_at,
        sequencer=sequencer if isinstance(sequencer, str) and sequencer else None,
        actor=actor,
    )


# --- DeadLetterQueue -----------------------------------------------------------------------------

POISON_QUEUE = "webjobs-blobtrigger-poison"
POISON_SOURCE = "blob-trigger-poison"
EVENT_GRID_SOURCE = "event-grid-dead-letter"
REPLAY_ACTOR = "dead-letter-replay"
# Peek Messages returns at most 32 messages and cannot page past them.
PEEK_MAX = 32
# How far `remove` looks for a poison message before giving up (it was handled elsewhere, or lies
# further back and will be replayed, idempotently, by a later run).
REMOVE_SEARCH_ROUNDS = 8


class AzureDeadLetterQueue(DeadLetterQueue):
    """Both places Azure parks upload notifications it gave up on.

    The blob trigger's poison queue: after `poisonBlobThreshold` failed invocations the host enqueues
    a JSON message naming FunctionId, BlobType, ContainerName, BlobName and ETag (base64-encoded by
    the Functions storage extension; plain JSON is read too). It carries no size or time, so the
    store's current properties stand in while the ETag still matches; otherwise the letter names a
    version that is gone or replaced, which the replay reads by ETag and reports as gone or stale.

    Event Grid's dead-letter container: blobs `<SUBSCRIPTION>/<y>/<m>/<d>/<h>/<guid>.json`, each a
    JSON array of undeliverable events, read with `object_created_from_event_grid`.

    `peek` leaves everything in place; it sees the first 32 poison messages (the service's limit for
    a peek), then dead-letter blobs in name order. Removing a poison message needs its pop receipt,
    which only a receive gives: `remove` receives messages, deletes the one it is after and makes the
    others visible again at once.
    """

    def __init__(
        self,
        queue: QueueClient,
        dead_letters: ContainerClient,
        artifacts: ArtifactStore,
        uploads_container: str,
        *,
        lease_seconds: int = 60,
    ) -> None:
        self._queue = queue
        self._dead_letters = dead_letters
        self._artifacts = artifacts
        self._uploads = uploads_container
        self._lease = lease_seconds

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        letters = self._poison_letters(min(limit, PEEK_MAX))
        if len(letters) < limit:
            letters += self._event_grid_letters(limit - len(letters))
        return letters

    def remove(self, letter: DeadLetter) -> None:
        source, _, name = letter.handle.partition(":")
        if source == POISON_SOURCE and name:
            self._remove_poison(name)
        elif source == EVENT_GRID_SOURCE and name:
            with _storage_errors(f"removing dead letter {name!r}"), suppress(ResourceNotFoundError):
                self._dead_letters.delete_blob(name)
        else:
            raise InvalidInput(f"{letter.handle!r} is not a dead letter of this queue")

    # --- the poison queue ------------------------------------------------------------------------

    def _poison_letters(self, limit: int) -> list[DeadLetter]:
        with _storage_errors(f"peeking at the {POISON_QUEUE} queue"):
            try:
                messages = self._queue.peek_messages(max_messages=limit)
            except ResourceNotFoundError:
                return []  # the host creates the queue with its first poison message
        return [self._poison_letter(m.id, str(m.content), m.inserted_on) for m in messages]

    def _poison_letter(self, message_id: str, content: str, inserted_on: datetime | None) -> DeadLetter:
        handle = f"{POISON_SOURCE}:{message_id}"
        try:
            message = _json_message(content)
            container, key = str(message["ContainerName"]), str(message["BlobName"])
            etag = quoted_etag(message["ETag"])
            if etag is None or not key:
                raise ValueError("the message names no blob version")
        except (ValueError, KeyError, TypeError) as error:
            return DeadLetter(handle, POISON_SOURCE, (), inserted_on, f"not a blob trigger poison message: {error}")
        detail = f"{message.get('FunctionId') or 'the blob trigger'} failed on every attempt"
        if container != self._uploads:
            detail += f"; container {container!r} is not the uploads container {self._uploads!r}"
            return DeadLetter(handle, POISON_SOURCE, (), inserted_on, detail)
        info = self._artifacts.head(key)
        if info is not None and info.etag == etag:
            event = ObjectCreated(key, etag, info.size, info.modified_at, actor=REPLAY_ACTOR)
        else:
            detail += "; that version is gone or replaced"
            event = ObjectCreated(key, etag, 0, inserted_on or datetime.now(UTC), actor=REPLAY_ACTOR)
        return DeadLetter(handle, POISON_SOURCE, (event,), inserted_on, detail)

    def _remove_poison(self, message_id: str) -> None:
        held: list[QueueMessage] = []
        with _storage_errors(f"removing poison message {message_id!r}"):
            try:
                for _ in range(REMOVE_SEARCH_ROUNDS):
                    batch = list(
                        self._queue.receive_messages(
                            messages_per_page=PEEK_MAX, max_messages=PEEK_MAX, visibility_timeout=self._lease
                        )
                    )
                    if not batch:
                        return
                    wanted = [m for m in batch if m.id == message_id]
                    held += [m for m in batch if m.id != message_id]
                    if wanted:
                        self._queue.delete_message(wanted[0])
                        return
            except ResourceNotFoundError:
                return  # no queue, or the message went meanwhile
            finally:
                for message in held:
                    with suppress(HttpResponseError):
                        self._queue.update_message(message, visibility_timeout=0)

    # --- Event Grid's dead-letter container ------------------------------------------------------

    def _event_grid_letters(self, limit: int) -> list[DeadLetter]:
        with _storage_errors("listing Event Grid's dead letters"):
            try:
                blobs = list(islice(self._dead_letters.list_blobs(results_per_page=min(limit, 5000)), limit))
            except ResourceNotFoundError:
                return []
        return [self._event_grid_letter(blob.name, blob.last_modified) for blob in blobs]

    def _event_grid_letter(self, name: str, modified: datetime | None) -> DeadLetter:
        handle = f"{EVENT_GRID_SOURCE}:{name}"
        with _storage_errors(f"reading dead letter {name!r}"):
            try:
                raw = self._dead_letters.download_blob(name).readall()
            except ResourceNotFoundError:
                return DeadLetter(handle, EVENT_GRID_SOURCE, (), modified, "removed meanwhile")
        try:
            events = json.loads(raw)
            if not isinstance(events, list) or not events or not all(isinstance(e, dict) for e in events):
                raise ValueError("not a JSON array of events")
            created = tuple(object_created_from_event_grid(e, self._uploads, REPLAY_ACTOR) for e in events)
        except (ValueError, KeyError, TypeError) as error:
            return DeadLetter(handle, EVENT_GRID_SOURCE, (), modified, f"cannot be read as upload events: {error}")
        reasons = sorted({f"{e.get('deadLetterReason')} ({e.get('lastDeliveryOutcome')})" for e in events})
        failed_at = parse_time(events[-1].get("lastDeliveryAttemptTime")) or modified
        return DeadLetter(handle, EVENT_GRID_SOURCE, created, failed_at, "Event Grid: " + "; ".join(reasons))


def _json_message(content: str) -> dict[str, Any]:
    """A queue message's JSON object, plain or base64-encoded (the Functions storage extension's default)."""
    try:
        document = json.loads(content)
    except ValueError:
        document = json.loads(base64.b64decode(content, validate=True))
    if not isinstance(document, dict):
        raise ValueError("the message is not a JSON object")
    return document


# --- settings and composition --------------------------------------------------------------------

# The connection the blob trigger names; the host and our SDK clients read the same app settings:
# `ModelRepoStorage` (a connection string, for Azurite) or `ModelRepoStorage__blobServiceUri`,
# `__queueServiceUri`, `__tableServiceUri` (+ `__credential`, `__clientId`) for a managed identity.
CONNECTION = "ModelRepoStorage"
UPLOADS_SETTING = "MODELREPO_UPLOADS_CONTAINER"
RECONCILE_SCHEDULE_SETTING = "MODELREPO_RECONCILE_SCHEDULE"

CONTAINER_NAME = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
TABLE_NAME = r"^[A-Za-z][A-Za-z0-9]{2,62}$"
# NCRONTAB, as the timer trigger reads it: six fields, seconds first.
NCRONTAB = r"^\S+( \S+){5}$"


class AzureSettings(BaseModel):
    """The app settings of the Functions host, which `modelrepo ... --backend azure` reads too."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection_string: SecretStr | None = None
    blob_service_uri: str | None = Field(default=None, pattern=r"^https://")
    table_service_uri: str | None = Field(default=None, pattern=r"^https://")
    queue_service_uri: str | None = Field(default=None, pattern=r"^https://")
    client_id: str | None = None
    uploads_container: str = Field(pattern=CONTAINER_NAME)
    registry_container: str = Field(default="registry", pattern=CONTAINER_NAME)
    dead_letter_container: str = Field(default="deadletter", pattern=CONTAINER_NAME)
    table: str = Field(default="modelrepo", pattern=TABLE_NAME)
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=200)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)
    # The timer trigger reads the schedule itself (%MODELREPO_RECONCILE_SCHEDULE%); it is validated
    # here so that a broken value fails the settings tests, not the host's indexing.
    reconcile_schedule: str = Field(default="0 */15 * * * *", pattern=NCRONTAB)
    # Below host.json's functionTimeout (10 min), with room to save the sweep's position.
    reconcile_budget_seconds: float = Field(default=240.0, gt=0, le=480)

    @field_validator("uploads_container", "registry_container", "dead_letter_container")
    @classmethod
    def _no_double_dash(cls, name: str) -> str:
        if "--" in name:
            raise ValueError("a container name cannot contain '--'")
        return name

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> Self:
        uris = (self.blob_service_uri, self.table_service_uri, self.queue_service_uri)
        identity = all(uri is not None for uri in uris)
        if (self.connection_string is None) == (not identity):
            raise ValueError(
                f"set either {CONNECTION} (a connection string, for Azurite) or all of "
                f"{CONNECTION}__blobServiceUri, __tableServiceUri and __queueServiceUri (managed identity)"
            )
        containers = (self.uploads_container, self.registry_container, self.dead_letter_container)
        if len(set(containers)) != len(containers):
            raise ValueError("the uploads, registry and dead-letter containers must be three different containers")
        return self

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> AzureSettings:
        names = {
            "connection_string": CONNECTION,
            "blob_service_uri": f"{CONNECTION}__blobServiceUri",
            "table_service_uri": f"{CONNECTION}__tableServiceUri",
            "queue_service_uri": f"{CONNECTION}__queueServiceUri",
            "client_id": f"{CONNECTION}__clientId",
            "uploads_container": UPLOADS_SETTING,
            "registry_container": "MODELREPO_REGISTRY_CONTAINER",
            "dead_letter_container": "MODELREPO_DEADLETTER_CONTAINER",
            "table": "MODELREPO_TABLE",
            "register_deadline_seconds": "MODELREPO_REGISTER_DEADLINE_SECONDS",
            "max_body_bytes": "MODELREPO_MAX_BODY_BYTES",
            "reconcile_schedule": RECONCILE_SCHEDULE_SETTING,
            "reconcile_budget_seconds": "MODELREPO_RECONCILE_BUDGET_SECONDS",
        }
        values: dict[str, Any] = {field: environ[name] for field, name in names.items() if environ.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise InvalidInput(f"invalid app settings: {describe_validation_error(error)}") from None


def connect(settings: AzureSettings, **options: Any) -> AzureStorage:
    """The SDK clients the settings describe; nothing is called yet."""
    if settings.uses_identity:
        assert settings.blob_service_uri and settings.table_service_uri and settings.queue_service_uri
        credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
        return AzureStorage.from_identity(
            settings.blob_service_uri, settings.table_service_uri, settings.queue_service_uri, credential
        )
    assert settings.connection_string is not None
    return AzureStorage.from_connection_string(settings.connection_string.get_secret_value(), **options)


def build_repository(settings: AzureSettings, storage: AzureStorage) -> ModelRepository:
    return ModelRepository(
        AzureBlobArtifactStore(storage.blobs, settings.uploads_container, settings.registry_container),
        AzureTableMetadataStore(storage.tables.get_table_client(settings.table)),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
    )


def dead_letter_queue(settings: AzureSettings, storage: AzureStorage, artifacts: ArtifactStore) -> AzureDeadLetterQueue:
    return AzureDeadLetterQueue(
        storage.queues.get_queue_client(POISON_QUEUE),
        storage.blobs.get_container_client(settings.dead_letter_container),
        artifacts,
        settings.uploads_container,
    )


def open_backend(environ: Mapping[str, str]) -> Backend:
    """What `modelrepo reconcile|dead-letters|replay --backend azure` works on: the storage the
    functions use, from the same app settings (export them, or `az functionapp config appsettings`)."""
    settings = AzureSettings.from_environment(environ)
    storage = connect(settings)
    repository = build_repository(settings, storage)
    return Backend(repository, dead_letter_queue(settings, storage, repository.artifacts))
