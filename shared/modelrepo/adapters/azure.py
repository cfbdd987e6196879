"""Azure adapters: AzureBlobArtifactStore (Blob Storage), AzureTableMetadataStore (Table Storage),
AzureDeadLetterQueue (the blob trigger's poison queue and Event Grid's dead-letter container),
EventGridPublisher and EventHints (events out: the outbox's events to an Event Grid topic), and
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
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import count, islice
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, Self, cast
from urllib.parse import quote, unquote, urlsplit

from azure.core import MatchConditions
from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.messaging import CloudEvent as AzureCloudEvent
from azure.core.paging import PageIterator
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode
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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from modelrepo.backends import Backend
from modelrepo.dispatch import DeliveryFailed, Dispatcher
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
from modelrepo.limits import DEFAULT_MAX_BODY_BYTES
from modelrepo.model import ApprovalStatus, check_experiment_id, check_run_id, describe_validation_error
from modelrepo.once import Once
from modelrepo.outbox import CloudEvent
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
from modelrepo.projections import Indexer
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository

if TYPE_CHECKING:  # imported where a queue is first used (`AzureStorage.queues`)
    from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

log = logging.getLogger(__name__)

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
    """The SDK service clients of one storage account, built with the same policy.

    The queue service client is built on first use, with its SDK: a worker that only reads (most
    API calls) sends no hint and never needs azure.storage.queue, whose import is a sizeable share
    of a cold start (bench/README.md, Cold start).
    """

    blobs: BlobServiceClient
    tables: TableServiceClient
    queue_service: Once[QueueServiceClient] = field(repr=False, compare=False)

    @property
    def queues(self) -> QueueServiceClient:
        return self.queue_service.get()

    @classmethod
    def from_connection_string(cls, connection_string: str, **options: Any) -> AzureStorage:
        """For Azurite and development (`UseDevelopmentStorage=true` works too).

        `options` reach every client on top of the defaults (tests pass a fault-injecting `transport`).
        """

        def queues() -> QueueServiceClient:
            from azure.storage.queue import QueueServiceClient

            return QueueServiceClient.from_connection_string(connection_string, **(_queue_options() | options))

        return cls(
            BlobServiceClient.from_connection_string(connection_string, **(_blob_options() | options)),
            TableServiceClient.from_connection_string(connection_string, **(CLIENT_OPTIONS | options)),
            Once(queues),
        )

    @classmethod
    def from_identity(
        cls, blob_service_uri: str, table_service_uri: str, queue_service_uri: str, credential: TokenCredential
    ) -> AzureStorage:
        """For production: Entra ID tokens (managed identity), no account keys anywhere."""

        def queues() -> QueueServiceClient:
            from azure.storage.queue import QueueServiceClient

            return QueueServiceClient(queue_service_uri, credential=credential, **_queue_options())

        return cls(
            BlobServiceClient(blob_service_uri, credential=credential, **_blob_options()),
            TableServiceClient(table_service_uri, credential=credential, **CLIENT_OPTIONS),
            Once(queues),
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
    from azure.storage.queue import ExponentialRetry as QueueExponentialRetry

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

    def put_pinned(self, digest: str, data: bytes) -> None:
        with _storage_errors(f"storing pinned {digest}"), suppress(ResourceExistsError):
            self._pinned(digest).upload_blob(data, overwrite=False)

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

    def uri_of(self, key: str) -> str:
        return str(self._blob(key).url)

    def key_of_uri(self, uri: str) -> str | None:
        """The container's blob URL (what `uri_of` gives), or wasbs://<container>@<account host>/<key>."""
        container_url = str(self._uploads.url).rstrip("/") + "/"
        if uri.startswith(container_url):
            return unquote(uri[len(container_url) :])
        parts = urlsplit(uri)
        account_host = urlsplit(container_url).netloc
        if parts.scheme in ("wasbs", "wasb") and parts.netloc == f"{self._uploads.container_name}@{account_host}":
            return unquote(parts.path.lstrip("/"))
        return None

    def list_pinned(self, *, after: str | None = None, limit: int = 1000) -> tuple[tuple[str, ...], str | None]:
        """`after` is the service's continuation token of the previous page."""
        with _storage_errors("listing the registry"):
            pages = self._registry.list_blobs(name_starts_with=REGISTRY_PREFIX, results_per_page=min(limit, 5000))
            page = pages.by_page(continuation_token=after)
            digests = tuple(blob.name.removeprefix(REGISTRY_PREFIX) for blob in next(page, []))
            token: str | None = getattr(page, "continuation_token", None)  # set by the SDK's page iterator
            return digests, token or None

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


# --- events out: Event Grid and the dispatcher's hints --------------------------------------------

# The name of the dispatcher's cursor (`dsp~event-grid`) and parked rows. It names the role, not the
# topic: pointing the app at another topic goes on from where the old one stopped.
EVENT_GRID_SUBSCRIBER = "event-grid"
# Event Grid takes at most 1 MB per publish request (and per event). Requests are cut by an estimate
# (the event's JSON as json.dumps writes it, as the SDK does); a tenth is left for the difference.
EVENT_GRID_REQUEST_BYTES = 900_000
# The publish pipeline's retries and timeouts: a few quick retries (429/5xx/connection errors), then
# the dispatcher parks the partition and tries again later. The SDK's defaults (300 s timeouts) could
# hold one invocation for most of host.json's functionTimeout.
EVENT_GRID_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 8,
    "connection_timeout": 10,
    "read_timeout": 30,
}
# The CloudEvents context attributes the SDK's CloudEvent has fields for; everything else the core
# puts in an event (`sequence`, `actor`, and what later features add) travels as an extension.
_CLOUD_EVENT_FIELDS = frozenset(
    {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data"}
)


class TopicClient(Protocol):
    """What the publisher needs of the SDK's basic-tier publisher client."""

    def send(self, events: list[AzureCloudEvent[Any]]) -> None: ...

    def close(self) -> None: ...


def to_azure_cloud_event(event: CloudEvent) -> AzureCloudEvent[Any]:
    """The SDK's CloudEvent for one of ours: every attribute kept, extensions included."""
    document = event.to_json()
    return AzureCloudEvent(
        source=event.source,
        type=event.type,
        specversion=event.specversion,
        id=event.id,
        time=event.time,
        subject=event.subject,
        datacontenttype=event.datacontenttype,
        data=document["data"],
        extensions={name: value for name, value in document.items() if name not in _CLOUD_EVENT_FIELDS},
    )


def _estimated_bytes(event: CloudEvent) -> int:
    return len(json.dumps(event.to_json())) + 2  # and the ", " that separates it from the next


class EventGridPublisher:
    """Publishes events to an Event Grid custom topic (CloudEvents 1.0 input schema), in order.

    A batch goes out as few requests as Event Grid's size limit allows, one after the other, each in
    CloudEvents batch mode (`application/cloudevents-batch+json`); the next only once the previous
    was accepted (HTTP 200). Anything else, an error answer, an unreachable topic or a token that
    could not be had, is `DeliveryFailed`: the dispatcher keeps its cursor before the batch and
    delivers it again (a prefix may arrive twice; consumers dedupe by `id`).
    """

    def __init__(self, client: TopicClient, endpoint: str, *, request_bytes: int = EVENT_GRID_REQUEST_BYTES) -> None:
        self._client = client
        self.endpoint = endpoint
        self._request_bytes = request_bytes

    @classmethod
    def connect(
        cls,
        endpoint: str,
        credential: TokenCredential | AzureKeyCredential,
        *,
        request_bytes: int = EVENT_GRID_REQUEST_BYTES,
        **options: Any,
    ) -> EventGridPublisher:
        """A publisher over the SDK's client. `credential`: Entra ID (DefaultAzureCredential, the
        app's identity, which holds *EventGrid Data Sender* on the topic); a topic key only for
        development. `options` reach the SDK's pipeline on top of `EVENT_GRID_OPTIONS`.

        `azure.eventgrid.EventGridPublisherClient` (4.22) wraps the basic-tier client below and,
        for a custom topic, drops every keyword argument, so its timeouts and retries cannot be set
        through it; the basic-tier client it wraps takes them. Imported here, not at module level:
        only the dispatcher functions publish, and the other functions' cold start need not pay for it.
        """
        from azure.eventgrid._legacy import EventGridPublisherClient as BasicTopicClient

        client = BasicTopicClient(endpoint, credential, **(EVENT_GRID_OPTIONS | options))
        return cls(cast(TopicClient, client), endpoint, request_bytes=request_bytes)

    @property
    def subscriber(self) -> str:
        return EVENT_GRID_SUBSCRIBER

    def publish(self, events: Sequence[CloudEvent]) -> None:
        for request in self._requests(events):
            try:
                self._client.send([to_azure_cloud_event(event) for event in request])
            except (AzureError, ValueError, TypeError) as error:
                first, last = request[0], request[-1]
                raise DeliveryFailed(
                    f"Event Grid topic {self.endpoint} did not take events {first.sequence}-{last.sequence} "
                    f"of {first.subject!r}: {_describe(error)}"
                ) from None

    def _requests(self, events: Sequence[CloudEvent]) -> Iterator[list[CloudEvent]]:
        """The events in order, cut into requests below the size limit; an event above it alone
        can never be published and fails the batch before anything of it is sent."""
        request: list[CloudEvent] = []
        size = 2
        sizes = [_estimated_bytes(event) for event in events]
        for event, estimated in zip(events, sizes, strict=True):
            if estimated + 2 > self._request_bytes:
                raise DeliveryFailed(
                    f"event {event.sequence} of {event.subject!r} is about {estimated} bytes; Event Grid "
                    f"takes at most {self._request_bytes} in one request"
                )
        for event, estimated in zip(events, sizes, strict=True):
            if request and size + estimated > self._request_bytes:
                yield request
                request, size = [], 2
            request.append(event)
            size += estimated
        if request:
            yield request

    def close(self) -> None:
        self._client.close()


def _describe(error: Exception) -> str:
    if isinstance(error, HttpResponseError) and error.status_code:
        return f"HTTP {error.status_code} {error.reason or ''}".strip()
    message = getattr(error, "message", None) or str(error)
    return f"{type(error).__name__}: {str(message).splitlines()[0] if message else ''}".strip()


# A hint is sent once, briefly: the sweep is the safety net.
HINT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 5, "read_timeout": 10}


class EventHints:
    """After each commit, a message on the hint queue names the partition that has new events.

    The queue-triggered dispatcher function drains that partition at once. A hint is only a hint,
    so it stays off the request's path: `notify` notes the partition and returns, and one sender
    thread per process puts the messages on the queue, one per partition however many commits it
    had meanwhile (a burst of registrations to one experiment becomes a few hints, not one per
    registration). Each is sent once, without retries; a failure is logged. The timer sweep
    delivers what a lost hint, or a process that stopped before sending it, left behind. Messages
    are base64, as the Functions queue trigger reads them by default (host.json
    `extensions.queues.messageEncoding`).

    The queue client is built by the sender thread before its first hint, so that a worker that
    commits nothing never builds it; with `create` (development, where the app creates what
    infra/main.bicep creates in Azure) it first creates the queue if it is missing.
    """

    def __init__(self, queue: Callable[[], QueueClient], *, create: bool = False) -> None:
        self._build_queue = queue
        self._queue: QueueClient | None = None
        self._create = create
        self._pending: dict[str, None] = {}  # partitions in the order their first commit came
        self._sending = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def on(cls, queues: Callable[[], QueueServiceClient], name: str, *, create: bool = False) -> EventHints:
        def queue() -> QueueClient:
            from azure.storage.queue import TextBase64EncodePolicy

            return queues().get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())

        return cls(queue, create=create)

    def notify(self, partition: str) -> None:
        """Called after a commit: never blocks on the queue and never raises."""
        with self._changed:
            if self._closed:
                return
            self._pending[partition] = None
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_all, name="event-hints", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every noted partition was sent (or failed); False if `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._sending, timeout)

    def close(self) -> None:
        """Send what is noted, then stop the sender thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _send_all(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending:
                    return  # closed, and nothing left to send
                partitions, self._pending = list(self._pending), {}
                self._sending = True
            for partition in partitions:
                self._send(partition)
            with self._changed:
                self._sending = False
                self._changed.notify_all()

    def _send(self, partition: str) -> None:
        try:
            if self._queue is None:
                queue = self._build_queue()
                if self._create:
                    with suppress(ResourceExistsError):
                        queue.create_queue()
                self._queue = queue
            self._queue.send_message(hint_message(partition), **HINT_OPTIONS)
        except Exception as error:  # a hint is best effort; the sender thread must go on
            log.warning("no hint for %s (%s); the next event sweep delivers its events", partition, _describe(error))


def hint_message(partition: str) -> str:
    return json.dumps({"partition": partition}, separators=(",", ":"))


def partition_of_hint(body: str | bytes) -> str:
    """The partition a hint names; ValueError for anything that is not a hint of ours."""
    try:
        document = json.loads(body)
    except ValueError:
        raise ValueError("the message is not JSON") from None
    partition = document.get("partition") if isinstance(document, dict) else None
    if not isinstance(partition, str):
        raise ValueError("the message names no partition")
    kind, _, name = partition.partition("~")
    if kind == "exp":
        check_experiment_id(name)
    elif kind == "run":
        check_run_id(name)
    else:
        raise ValueError(f"{partition!r} is not a partition of events (exp~<experimentId> or run~<runId>)")
    return partition


@dataclass
class EventDelivery:
    """What the functions need to deliver events: hints to send after commits, the index subscriber
    (experiments listing, search), and, with a topic, the Event Grid dispatcher (its client built on
    first use, so that functions that only send hints never build it)."""

    settings: AzureSettings
    metadata: MetadataStore
    hints: EventHints
    credential: TokenCredential | AzureKeyCredential | None  # None: no topic
    options: dict[str, Any] = field(default_factory=dict)
    _dispatcher: Once[Dispatcher] = field(init=False)

    def __post_init__(self) -> None:
        self._dispatcher = Once(self._connect_topic)

    @property
    def index(self) -> Dispatcher:
        return Dispatcher(self.metadata, Indexer(self.metadata))

    @property
    def subscribers(self) -> list[Dispatcher]:
        """Every dispatcher a partition's events go to: the index, and the topic if there is one."""
        return [self.index, *([self.dispatcher] if self.credential is not None else [])]

    @property
    def dispatcher(self) -> Dispatcher:
        return self._dispatcher.get()

    def _connect_topic(self) -> Dispatcher:
        assert self.settings.event_topic_endpoint is not None and self.credential is not None
        publisher = EventGridPublisher.connect(self.settings.event_topic_endpoint, self.credential, **self.options)
        return Dispatcher(self.metadata, publisher)

    def close(self) -> None:
        self.hints.close()
        if (dispatcher := self._dispatcher.forget()) is not None:
            cast(EventGridPublisher, dispatcher.publisher).close()


# --- settings and composition --------------------------------------------------------------------

# The connection the blob trigger names; the host and our SDK clients read the same app settings:
# `ModelRepoStorage` (a connection string, for Azurite) or `ModelRepoStorage__blobServiceUri`,
# `__queueServiceUri`, `__tableServiceUri` (+ `__credential`, `__clientId`) for a managed identity.
CONNECTION = "ModelRepoStorage"
UPLOADS_SETTING = "MODELREPO_UPLOADS_CONTAINER"
RECONCILE_SCHEDULE_SETTING = "MODELREPO_RECONCILE_SCHEDULE"
EVENTS_QUEUE_SETTING = "MODELREPO_EVENTS_QUEUE"
EVENTS_SWEEP_SCHEDULE_SETTING = "MODELREPO_EVENTS_SWEEP_SCHEDULE"
EVENT_TOPIC_SETTING = "MODELREPO_EVENT_TOPIC_ENDPOINT"
EVENT_TOPIC_KEY_SETTING = "MODELREPO_EVENT_TOPIC_KEY"

CONTAINER_NAME = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"
TABLE_NAME = r"^[A-Za-z][A-Za-z0-9]{2,62}$"
# A storage queue name, short enough that the host's `<name>-poison` queue is one too.
QUEUE_NAME = r"^[a-z0-9][a-z0-9-]{1,54}[a-z0-9]$"
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
    # Events out: no topic, no dispatcher (the events still wait in the outbox, from sequence 1).
    event_topic_endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    event_topic_key: SecretStr | None = None  # development only: Bicep turns the topic's keys off
    # The events' CloudEvents `source`; by default the metadata table's URL, this repository's identity.
    event_source: str | None = Field(default=None, min_length=1, max_length=1024, pattern=r"^\S+$")
    events_queue: str = Field(default="modelrepo-events", pattern=QUEUE_NAME)
    events_sweep_schedule: str = Field(default="0 */5 * * * *", pattern=NCRONTAB)
    # The approval status new versions start with.
    default_approval: ApprovalStatus = ApprovalStatus.PENDING
    # Changes must name their caller's App Service authentication principal as their actor (else 403).
    actor_must_be_principal: bool = False

    @field_validator("uploads_container", "registry_container", "dead_letter_container", "events_queue")
    @classmethod
    def _no_double_dash(cls, name: str) -> str:
        if "--" in name:
            raise ValueError("a container or queue name cannot contain '--'")
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
        if self.event_topic_key is not None:
            if self.event_topic_endpoint is None:
                raise ValueError(f"{EVENT_TOPIC_KEY_SETTING} is set but {EVENT_TOPIC_SETTING} is not")
            if self.uses_identity:
                raise ValueError(
                    f"{EVENT_TOPIC_KEY_SETTING} is for development only: in Azure the app's identity publishes "
                    "(EventGrid Data Sender on the topic) and the topic's keys are off"
                )
        elif self.event_topic_endpoint is not None and not self.event_topic_endpoint.startswith("https://"):
            raise ValueError(
                f"{EVENT_TOPIC_SETTING} must be https: Entra ID tokens are sent over TLS only "
                f"(http only for a development topic with {EVENT_TOPIC_KEY_SETTING})"
            )
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
            "event_topic_endpoint": EVENT_TOPIC_SETTING,
            "event_topic_key": EVENT_TOPIC_KEY_SETTING,
            "event_source": "MODELREPO_EVENT_SOURCE",
            "events_queue": EVENTS_QUEUE_SETTING,
            "default_approval": "MODELREPO_DEFAULT_APPROVAL",
            "actor_must_be_principal": "MODELREPO_ACTOR_MUST_BE_PRINCIPAL",
            "events_sweep_schedule": EVENTS_SWEEP_SCHEDULE_SETTING,
        }
        values: dict[str, Any] = {field: environ[name] for field, name in names.items() if environ.get(name)}
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise InvalidInput(f"invalid app settings: {describe_validation_error(error)}") from None


def managed_identity(client_id: str | None) -> TokenCredential:
    """The app's Entra ID credential. azure.identity (with msal) is imported here rather than with
    the module: it is among the largest imports of a cold start (bench/README.md, Cold start), and
    development against Azurite, with a connection string, never needs it."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id)


def connect(settings: AzureSettings, **options: Any) -> AzureStorage:
    """The SDK clients the settings describe; nothing is called yet."""
    if settings.uses_identity:
        assert settings.blob_service_uri and settings.table_service_uri and settings.queue_service_uri
        credential = managed_identity(settings.client_id)
        return AzureStorage.from_identity(
            settings.blob_service_uri, settings.table_service_uri, settings.queue_service_uri, credential
        )
    assert settings.connection_string is not None
    return AzureStorage.from_connection_string(settings.connection_string.get_secret_value(), **options)


def event_source(settings: AzureSettings, storage: AzureStorage) -> str:
    """The CloudEvents `source` of this repository's events: the setting, or the metadata table's URL
    (`https://<account>.table.core.windows.net/<table>`), unique to this repository."""
    if settings.event_source:
        return settings.event_source
    return f"{storage.tables.url.rstrip('/')}/{settings.table}"


def build_repository(settings: AzureSettings, storage: AzureStorage) -> ModelRepository:
    return ModelRepository(
        AzureBlobArtifactStore(storage.blobs, settings.uploads_container, settings.registry_container),
        AzureTableMetadataStore(storage.tables.get_table_client(settings.table)),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
        source=event_source(settings, storage),
        default_approval=settings.default_approval,
    )


def event_delivery(
    settings: AzureSettings, storage: AzureStorage, metadata: MetadataStore, **options: Any
) -> EventDelivery:
    """Hints, the index subscriber, and the Event Grid dispatcher if a topic is configured. `options`
    reach the Event Grid client's pipeline (tests pass `connection_verify` for a loopback topic's
    certificate)."""
    credential: TokenCredential | AzureKeyCredential | None = None
    if settings.event_topic_key is not None:
        credential = AzureKeyCredential(settings.event_topic_key.get_secret_value())
    elif settings.event_topic_endpoint is not None:
        credential = managed_identity(settings.client_id)
    # Development on a connection string creates the queue, as bootstrap creates the containers.
    hints = EventHints.on(lambda: storage.queues, settings.events_queue, create=not settings.uses_identity)
    return EventDelivery(settings, metadata, hints, credential, options)


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
