"""The ports on AWS, with boto3: S3ArtifactStore, DynamoDBMetadataStore, SqsDeadLetterQueue.

Only this module touches boto3; every SDK error is translated into `modelrepo.errors` here, so
handlers never see a botocore exception. It also holds what the Lambda host and the operator CLI
share: the settings (`AwsSettings`), how the repository is built from them (`build_repository`,
`open_backend`), the one translation of S3 event notifications into `ObjectCreated`, and the way
out for events: DynamoDB stream records of event rows into CloudEvents (`streamed_event`), put on
an EventBridge bus in order per partition (`EventBridgePublisher`, `StreamDispatch`).

Retries of individual calls are botocore's (standard or adaptive mode, configured on the client);
an error that still surfaces here has outlasted them. The core's own retry loop then decides.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, cast
from urllib.parse import quote, unquote_plus

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelrepo.backends import Backend
from modelrepo.dispatch import DeliveryFailed
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
from modelrepo.limits import DEFAULT_MAX_BODY_BYTES, MAX_ACTOR_CHARS
from modelrepo.model import ApprovalStatus, describe_validation_error
from modelrepo.once import Once
from modelrepo.outbox import CloudEvent, event_of
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
    Put,
    Write,
    check_transaction,
)
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from modelrepo.tables import EVENT_PREFIX

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

# S3 allows a single CopyObject up to 5 GB; above that the managed copy switches to UploadPartCopy.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024
REGISTRY_PREFIX = "sha256/"

_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "503",
        "TooManyRequestsException",
        "LimitExceededException",
    }
)


def client_config(
    *,
    total_attempts: int = 4,
    read_timeout: float = 10.0,
    mode: Literal["standard", "adaptive"] = "standard",
    signature_version: str | None = None,
) -> Config:
    """The botocore configuration both stores expect: bounded retries and timeouts.

    `total_attempts` counts the first try (botocore's `max_attempts` would count only retries).
    `standard` mode retries throttling and transient errors with jittered exponential backoff;
    `adaptive` additionally rate-limits the client when throttled. S3 clients pass "s3v4" so that
    presigned links are SigV4 (SigV2 links are deprecated and refused for KMS-encrypted objects).
    """
    return Config(
        signature_version=signature_version,
        retries={"mode": mode, "total_max_attempts": total_attempts},
        connect_timeout=3,
        read_timeout=read_timeout,
        tcp_keepalive=True,
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# --- S3 ------------------------------------------------------------------------------------------


def _strip_etag(etag: str) -> str:
    return etag.strip('"')


def _s3_error(error: Exception, doing: str) -> StorageError:
    """The core's error for an S3 failure; the message names the operation, never credentials."""
    if isinstance(error, ClientError):
        code = _code(error)
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectMissing(f"{doing}: no such object")
        if code in ("PreconditionFailed", "412"):
            return ObjectChanged(f"{doing}: the object was replaced by another version")
        if code in _THROTTLING_CODES:
            return Throttled(f"{doing}: S3 is throttling ({code})")
        return StorageError(f"{doing}: S3 answered {code or 'an error'}")
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return Throttled(f"{doing}: S3 could not be reached ({type(error).__name__})")
    return StorageError(f"{doing}: {type(error).__name__}")


class _Body:
    """A GetObject body as a BinaryIO-like reader whose stream errors are the core's errors."""

    def __init__(self, body: Any, doing: str) -> None:
        self._body = body
        self._doing = doing

    def read(self, size: int = -1) -> bytes:
        try:
            return cast(bytes, self._body.read(None if size < 0 else size))
        except (BotoCoreError, OSError) as error:
            raise _s3_error(error, self._doing) from None

    def close(self) -> None:
        self._body.close()


class S3ArtifactStore(ArtifactStore):
    """Uploads in one bucket, pinned bytes in a separate private registry bucket.

    A separate bucket keeps registry writes from firing the upload notifications and lets the
    registry have its own, stricter policy (no user writes, versioning for recovery).
    """

    def __init__(
        self,
        client: S3Client | Callable[[], S3Client],
        uploads_bucket: str,
        registry_bucket: str,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunk: int = MULTIPART_CHUNK,
    ) -> None:
        """`client` may be a function that makes the client when the store first needs it: a cold
        start that only reads metadata (most API calls) then never pays for building one."""
        self._connection = Once(client if callable(client) else lambda: client)
        self.uploads_bucket = uploads_bucket
        self.registry_bucket = registry_bucket
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunk, use_threads=False
        )

    @property
    def _client(self) -> S3Client:
        return self._connection.get()

    @staticmethod
    def registry_key(digest: str) -> str:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInput(f"{digest!r} is not a sha256 hex digest")
        return REGISTRY_PREFIX + digest

    # --- uploads ---------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            found = self._client.head_object(Bucket=self.uploads_bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            problem = _s3_error(error, f"reading the properties of {key!r}")
            if isinstance(problem, ObjectMissing):
                return None
            raise problem from None
        return ObjectInfo(
            key=key, size=found["ContentLength"], etag=_strip_etag(found["ETag"]), modified_at=found["LastModified"]
        )

    @contextmanager
    def open(self, key: str, *, etag: str) -> Iterator[BinaryIO]:
        doing = f"reading {key!r}"
        try:
            found = self._client.get_object(Bucket=self.uploads_bucket, Key=key, IfMatch=f'"{etag}"')
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, doing) from None
        body = _Body(found["Body"], doing)
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        """Multipart above the threshold; S3 shows the object only once it is complete."""
        try:
            self._client.upload_fileobj(data, self.uploads_bucket, key, Callback=progress, Config=self._transfer)
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, f"uploading {key!r}") from None
        info = self.head(key)
        if info is None:
            raise ObjectMissing(f"{key!r} was deleted right after it was uploaded")
        return info

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.uploads_bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            problem = _s3_error(error, f"deleting {key!r}")
            if not isinstance(problem, ObjectMissing):
                raise problem from None

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        arguments: dict[str, Any] = {"Bucket": self.uploads_bucket, "Prefix": prefix, "MaxKeys": limit}
        if after is not None:
            arguments["StartAfter"] = after
        try:
            page = self._client.list_objects_v2(**arguments)
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, f"listing {prefix!r}") from None
        objects = [
            ObjectInfo(
                key=entry["Key"],
                size=entry["Size"],
                etag=_strip_etag(entry["ETag"]),
                modified_at=entry["LastModified"],
            )
            for entry in page.get("Contents", [])
        ]
        truncated = page.get("IsTruncated", False) and objects
        return ObjectListing(objects, objects[-1].key if truncated else None)

    # --- registry --------------------------------------------------------------------------------

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        """Server-side copy of exactly version `etag`; CopyObject, or UploadPartCopy when large.

        `CopySourceIfMatch` makes S3 refuse the copy (412) if the upload was replaced since it was
        recorded, so the registry never receives bytes other than the recorded ones.
        """
        target = self.registry_key(digest)
        if self.has_pinned(digest):
            return
        try:
            self._client.copy(
                {"Bucket": self.uploads_bucket, "Key": key},
                self.registry_bucket,
                target,
                ExtraArgs={"CopySourceIfMatch": f'"{etag}"'},
                Config=self._transfer,
            )
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, f"pinning {key!r}") from None

    def put_pinned(self, digest: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.registry_bucket, Key=self.registry_key(digest), Body=data)
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, f"storing pinned bytes {digest}") from None

    def has_pinned(self, digest: str) -> bool:
        try:
            self._client.head_object(Bucket=self.registry_bucket, Key=self.registry_key(digest))
        except (ClientError, BotoCoreError) as error:
            problem = _s3_error(error, f"looking up pinned bytes {digest}")
            if isinstance(problem, ObjectMissing):
                return False
            raise problem from None
        return True

    @contextmanager
    def open_pinned(self, digest: str) -> Iterator[BinaryIO]:
        doing = f"reading pinned bytes {digest}"
        try:
            found = self._client.get_object(Bucket=self.registry_bucket, Key=self.registry_key(digest))
        except (ClientError, BotoCoreError) as error:
            problem = _s3_error(error, doing)
            if isinstance(problem, ObjectMissing):
                raise ObjectMissing(f"the registry holds no bytes with sha256 {digest}") from None
            raise problem from None
        body = _Body(found["Body"], doing)
        try:
            yield cast(BinaryIO, body)
        finally:
            body.close()

    def discard_pinned(self, digest: str) -> None:
        try:
            self._client.delete_object(Bucket=self.registry_bucket, Key=self.registry_key(digest))
        except (ClientError, BotoCoreError) as error:
            problem = _s3_error(error, f"discarding pinned bytes {digest}")
            if not isinstance(problem, ObjectMissing):
                raise problem from None

    def uri_of(self, key: str) -> str:
        return f"s3://{self.uploads_bucket}/{key}"

    def key_of_uri(self, uri: str) -> str | None:
        prefix = f"s3://{self.uploads_bucket}/"
        return uri[len(prefix) :] if uri.startswith(prefix) else None

    def list_pinned(self, *, after: str | None = None, limit: int = 1000) -> tuple[tuple[str, ...], str | None]:
        arguments: dict[str, Any] = {
            "Bucket": self.registry_bucket,
            "Prefix": REGISTRY_PREFIX,
            "MaxKeys": min(limit, 1000),
        }
        if after is not None:
            arguments["StartAfter"] = self.registry_key(after)
        try:
            page = self._client.list_objects_v2(**arguments)
        except (ClientError, BotoCoreError) as error:
            raise _s3_error(error, "listing the registry") from None
        digests = tuple(item["Key"].removeprefix(REGISTRY_PREFIX) for item in page.get("Contents", []))
        return digests, digests[-1] if page.get("IsTruncated") and digests else None

    def pinned_link(self, digest: str, *, filename: str, expires_seconds: int) -> str | None:
        """A presigned GET that names the file; it expires, and the bucket itself stays private."""
        try:
            return self._client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.registry_bucket,
                    "Key": self.registry_key(digest),
                    "ResponseContentDisposition": f"attachment; filename*=UTF-8''{quote(filename)}",
                },
                ExpiresIn=expires_seconds,
            )
        except BotoCoreError as error:  # no credentials to sign with, for instance
            raise _s3_error(error, f"signing a link to pinned bytes {digest}") from None


# --- DynamoDB ------------------------------------------------------------------------------------


def _read_error(error: Exception, doing: str) -> StorageError:
    if isinstance(error, ClientError):
        code = _code(error)
        if code in _THROTTLING_CODES:
            return Throttled(f"{doing}: DynamoDB is throttling ({code})")
        return StorageError(f"{doing}: DynamoDB answered {code or 'an error'}")
    if isinstance(error, (HTTPClientError, BotoConnectionError)):
        return Throttled(f"{doing}: DynamoDB could not be reached ({type(error).__name__})")
    return StorageError(f"{doing}: {type(error).__name__}")


def _write_error(error: Exception) -> StorageError:
    """Classify a failed TransactWriteItems by whether it can have committed."""
    doing = "writing to DynamoDB"
    if isinstance(error, ClientError):
        code = _code(error)
        if code == "TransactionCanceledException":
            reasons = error.response.get("CancellationReasons") or []
            codes = {str(r.get("Code")) for r in reasons}
            if "ConditionalCheckFailed" in codes:
                return ConditionFailed("a condition of the transaction did not hold")
            if codes & {
                "TransactionConflict",
                "ThrottlingError",
                "ProvisionedThroughputExceeded",
                "RequestLimitExceeded",
            }:
                # Another transaction holds one of the rows, or capacity ran out: nothing was written.
                return Throttled(f"the transaction was cancelled ({', '.join(sorted(codes - {'None'}))})")
            return StorageError(f"the transaction was cancelled ({', '.join(sorted(codes - {'None'}))})")
        if code == "ConditionalCheckFailedException":
            return ConditionFailed("a condition of the write did not hold")
        if code in ("TransactionInProgressException", "InternalServerError"):
            return OutcomeUnknown(f"{doing}: DynamoDB answered {code}; the write may have committed")
        if code in _THROTTLING_CODES or code == "TransactionConflictException":
            return Throttled(f"{doing}: DynamoDB is throttling ({code})")
        return StorageError(f"{doing}: DynamoDB answered {code or 'an error'}")
    if isinstance(error, (ConnectTimeoutError, EndpointConnectionError)):
        return Throttled(f"{doing}: DynamoDB could not be reached ({type(error).__name__})")  # nothing was sent
    if isinstance(error, (HTTPClientError, BotoConnectionError)):
        # Read timeouts and dropped connections: the request may have been applied.
        return OutcomeUnknown(f"{doing}: no answer ({type(error).__name__}); the write may have committed")
    return StorageError(f"{doing}: {type(error).__name__}")


# Whether an attempt of the TransactWriteItems call in progress on this thread may have committed.
# botocore retries synchronously, in the calling thread, so a thread-local follows one call.
_WRITE = threading.local()


def _note_write_attempt(
    response: tuple[Any, Mapping[str, Any]] | None = None, caught_exception: Exception | None = None, **_: Any
) -> None:
    """botocore's `needs-retry` event, after each attempt: note an attempt that may have committed."""
    if getattr(_WRITE, "maybe_committed", None) is None:
        return  # not a call made by DynamoDBMetadataStore.transact
    error: Exception | None = caught_exception
    if error is None and response is not None and "Error" in response[1]:
        error = ClientError(cast(Any, response[1]), "TransactWriteItems")
    if error is not None and isinstance(_write_error(error), OutcomeUnknown):
        _WRITE.maybe_committed = True


class DynamoDBMetadataStore(MetadataStore):
    """One table, string keys `pk` (partition) and `rk` (row), attributes `etag` and `doc`.

    `etag` is a random token written with every change, so a conditional write on it detects any
    intervening write, even one that left the document unchanged. `doc` is the document as one JSON
    string: documents stay opaque to DynamoDB and keep their exact JSON types.
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table
        # Registered once per client (the id is fixed); it sees every attempt botocore makes.
        client.meta.events.register(
            "needs-retry.dynamodb.TransactWriteItems", _note_write_attempt, unique_id="modelrepo-write-attempts"
        )

    @staticmethod
    def _key(partition: str, row: str) -> dict[str, AttributeValueTypeDef]:
        return {"pk": {"S": partition}, "rk": {"S": row}}

    @staticmethod
    def _item(raw: Mapping[str, Any]) -> Item:
        return Item(
            partition=raw["pk"]["S"], row=raw["rk"]["S"], data=json.loads(raw["doc"]["S"]), etag=raw["etag"]["S"]
        )

    def get(self, partition: str, row: str) -> Item | None:
        try:
            found = self._client.get_item(TableName=self.table, Key=self._key(partition, row), ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise _read_error(error, "reading from DynamoDB") from None
        raw = found.get("Item")
        return self._item(raw) if raw else None

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        if after is not None and not after.startswith(prefix):
            if after > prefix:
                return []  # every row with the prefix sorts before `after`
            after = None  # every row with the prefix sorts after it
        condition = "pk = :p AND begins_with(rk, :prefix)" if prefix else "pk = :p"
        values: dict[str, AttributeValueTypeDef] = {":p": {"S": partition}}
        if prefix:
            values[":prefix"] = {"S": prefix}
        start = self._key(partition, after) if after is not None else None
        items: list[Item] = []
        while len(items) < limit:
            arguments: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeValues": values,
                "ConsistentRead": True,
                "Limit": limit - len(items),
            }
            if start is not None:
                arguments["ExclusiveStartKey"] = start
            try:
                page = self._client.query(**arguments)
            except (ClientError, BotoCoreError) as error:
                raise _read_error(error, "querying DynamoDB") from None
            items.extend(self._item(raw) for raw in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:  # a page also ends at 1 MB; go on until `limit` or the range ends
                break
        return items

    def transact(self, writes: Sequence[Write]) -> None:
        """One TransactWriteItems with a ClientRequestToken.

        The token makes botocore's retries of this call idempotent for ten minutes: if the first
        attempt committed but its answer was lost, the retry reports success instead of failing on
        our own write. But once one attempt may have committed, a later attempt's refusal
        (throttled, say) does not undo it: the outcome is then unknown, whatever the last answer.
        """
        check_transaction(writes)
        items = [self._transact_item(w) for w in writes]
        _WRITE.maybe_committed = False
        try:
            self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except (ClientError, BotoCoreError) as error:
            problem = _write_error(error)
            if _WRITE.maybe_committed and not isinstance(problem, OutcomeUnknown):
                raise OutcomeUnknown(
                    f"writing to DynamoDB: an earlier attempt may have committed, then {problem.detail}"
                ) from None
            raise problem from None
        finally:
            _WRITE.maybe_committed = None

    def _transact_item(self, write: Write) -> TransactWriteItemTypeDef:
        if isinstance(write, Put):
            document = json.dumps(dict(write.data), separators=(",", ":"), allow_nan=False)
            put: dict[str, Any] = {
                "TableName": self.table,
                "Item": {
                    **self._key(write.partition, write.row),
                    "etag": {"S": uuid.uuid4().hex},
                    "doc": {"S": document},
                },
            }
            if write.if_absent:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            elif write.if_match is not None:
                put["ConditionExpression"] = "etag = :etag"
                put["ExpressionAttributeValues"] = {":etag": {"S": write.if_match}}
            return cast("TransactWriteItemTypeDef", {"Put": put})
        if isinstance(write, Delete):
            delete: dict[str, Any] = {"TableName": self.table, "Key": self._key(write.partition, write.row)}
            if write.if_match is not None:
                delete["ConditionExpression"] = "etag = :etag"
                delete["ExpressionAttributeValues"] = {":etag": {"S": write.if_match}}
            return cast("TransactWriteItemTypeDef", {"Delete": delete})
        _unknown_write(write)


def _unknown_write(write: object) -> NoReturn:
    raise TypeError(f"not a write: {write!r}")


# --- S3 event notifications ----------------------------------------------------------------------


class MalformedNotification(ValueError):
    """The message is not an S3 notification we can act on; retrying it cannot help."""


def is_test_event(payload: Any) -> bool:
    """S3 sends `s3:TestEvent` once when a notification configuration is saved."""
    return isinstance(payload, dict) and payload.get("Event") == "s3:TestEvent"


def object_created_events(body: str) -> list[ObjectCreated]:
    """The uploads announced by one S3 notification (an SQS message body); [] for S3's test event
    and other event types.

    The one place that knows the notification's shape, used by the record function and by the
    dead-letter queue alike: keys arrive form-URL-encoded (`+` for a space) and are decoded with
    `unquote_plus`; `sequencer` orders events of one key when S3 sends it (moto does not); the
    `eTag` names the object version the core will read.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        raise MalformedNotification("the message body is not JSON") from None
    if is_test_event(payload):
        return []
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise MalformedNotification("the message body is not an S3 event notification (no Records)")
    try:
        return [_object_created(record) for record in payload["Records"] if _announces_upload(record)]
    except (KeyError, TypeError, ValueError, AttributeError) as problem:
        raise MalformedNotification(f"an S3 record is malformed ({type(problem).__name__}: {problem})") from None


def _announces_upload(record: Any) -> bool:
    return str(record["eventName"]).startswith("ObjectCreated:")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is not a string")
    return value


def _object_created(record: Mapping[str, Any]) -> ObjectCreated:
    obj = record["s3"]["object"]
    etag = _text(obj["eTag"], "eTag").strip('"')
    if not etag:
        raise ValueError("the record has no eTag")
    size = obj["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("size is not a byte count")
    uploaded_at = datetime.fromisoformat(_text(record["eventTime"], "eventTime"))
    if uploaded_at.tzinfo is None:
        raise ValueError("eventTime has no time zone")
    sequencer = obj.get("sequencer") or None
    return ObjectCreated(
        key=unquote_plus(_text(obj["key"], "key"), errors="strict"),
        etag=etag,
        size=size,
        uploaded_at=uploaded_at,
        sequencer=None if sequencer is None else _text(sequencer, "sequencer"),
        actor=_actor(record),
    )


def _actor(record: Mapping[str, Any]) -> str:
    principal = (record.get("userIdentity") or {}).get("principalId")
    return f"s3:{principal}"[:MAX_ACTOR_CHARS] if principal else "s3-upload"


def s3_request_id(body: str) -> str | None:
    """S3's x-amz-request-id of the upload, to correlate our logs with S3's."""
    try:
        payload = json.loads(body)
        return str(payload["Records"][0]["responseElements"]["x-amz-request-id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


# --- SQS dead-letter queue -----------------------------------------------------------------------


class SqsDeadLetterQueue(DeadLetterQueue):
    """The record function's dead-letter queue: S3 notifications SQS gave up delivering.

    SQS cannot show a message without receiving it, so `peek` receives with a short visibility
    timeout and then makes what it saw visible again at once. A letter's handle is its message id;
    `remove` deletes it with the receipt handle of the latest `peek`, which is valid until the
    message is received again.
    """

    def __init__(
        self, client: SQSClient, queue_url: str, *, visibility_seconds: int = 30, wait_seconds: int = 1
    ) -> None:
        self._client = client
        self.queue_url = queue_url
        self.source = "sqs:" + queue_url.rstrip("/").rsplit("/", 1)[-1]
        self._visibility = visibility_seconds
        self._wait = wait_seconds
        self._receipts: dict[str, str] = {}

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        received: list[dict[str, Any]] = []
        try:
            while len(letters) < limit:
                # Long polling asks every SQS server; short polling may miss messages.
                found = self._client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, limit - len(letters)),
                    VisibilityTimeout=self._visibility,
                    WaitTimeSeconds=self._wait,
                    AttributeNames=["All"],
                )
                messages = [cast(dict[str, Any], m) for m in found.get("Messages", [])]
                if not messages:
                    break
                received += messages
                letters += [self._letter(m) for m in messages]
        except (ClientError, BotoCoreError) as error:
            raise _sqs_error(error, "receiving dead letters") from None
        finally:
            self._show_again(received)
        return letters

    def _letter(self, message: Mapping[str, Any]) -> DeadLetter:
        handle = str(message["MessageId"])
        self._receipts[handle] = str(message["ReceiptHandle"])
        attributes = message.get("Attributes") or {}
        sent = attributes.get("SentTimestamp")
        notified = f"; S3 sent it at {_from_millis(sent).isoformat()}" if sent else ""
        body = str(message.get("Body", ""))
        try:
            events = tuple(object_created_events(body))
        except MalformedNotification as problem:
            return DeadLetter(handle, self.source, (), None, f"not an S3 upload notification: {problem}{notified}")
        detail = (
            "SQS moved it here after the record function failed on it repeatedly "
            f"(its logs name each failure){notified}"
        )
        if not events:
            detail = f"announces no upload (an S3 test event or another event type){notified}"
        return DeadLetter(handle, self.source, events, None, detail)

    def _show_again(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """End the visibility timeout of peeked messages: they stay in the queue, visible."""
        for start in range(0, len(messages), 10):
            entries = [
                {"Id": str(n), "ReceiptHandle": str(m["ReceiptHandle"]), "VisibilityTimeout": 0}
                for n, m in enumerate(messages[start : start + 10])
            ]
            # If this fails, they become visible again when the short visibility timeout ends.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)  # type: ignore[arg-type]

    def remove(self, letter: DeadLetter) -> None:
        receipt = self._receipts.get(letter.handle)
        if receipt is None:
            raise InvalidInput(f"dead letter {letter.handle!r} was not peeked from {self.source}")
        try:
            self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except (ClientError, BotoCoreError) as error:
            raise _sqs_error(error, f"removing dead letter {letter.handle}") from None
        del self._receipts[letter.handle]


def _from_millis(value: str) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _sqs_error(error: Exception, doing: str) -> StorageError:
    if isinstance(error, ClientError):
        code = _code(error)
        if code in _THROTTLING_CODES or code == "RequestThrottled":
            return Throttled(f"{doing}: SQS is throttling ({code})")
        return StorageError(f"{doing}: SQS answered {code or 'an error'}")
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return Throttled(f"{doing}: SQS could not be reached ({type(error).__name__})")
    return StorageError(f"{doing}: {type(error).__name__}")


# --- events out: DynamoDB Streams -> EventBridge -------------------------------------------------

# The EventBridge `source` of every event this repository puts on its bus. EventBridge reserves
# `aws.*`; the CloudEvent inside (the `detail`) names the repository itself in its own `source`.
EVENTBRIDGE_SOURCE = "io.modelrepo"
# Stream sequence numbers are decimal strings of 21 to 40 digits.
STREAM_SEQUENCE = r"^[0-9]{1,40}$"


class MalformedStreamRecord(ValueError):
    """A stream record of an event row that does not hold a CloudEvent; retrying cannot help."""


class EventHeldBack(DeliveryFailed):
    """An earlier event of the same partition failed in this batch; this one waits for it."""


@dataclass(frozen=True)
class StreamedEvent:
    """The CloudEvent an event row's INSERT carries, with the partition (experiment or run) it orders in."""

    partition: str
    stream_sequence: str
    event: CloudEvent


def _attribute(image: Any, name: str) -> str:
    value = image.get(name) if isinstance(image, Mapping) else None
    text = value.get("S") if isinstance(value, Mapping) else None
    if not isinstance(text, str):
        raise MalformedStreamRecord(f"the stream record has no string attribute {name!r}")
    return text


def stream_partition(record: Mapping[str, Any]) -> str:
    """The partition (`pk`) a stream record belongs to: the unit of order."""
    return _attribute((record.get("dynamodb") or {}).get("Keys"), "pk")


def streamed_event(record: Mapping[str, Any]) -> StreamedEvent | None:
    """The CloudEvent a DynamoDB stream record announces; None when it is not an event row's INSERT.

    `record` is one record as Lambda passes it (`Records[n]`) or as GetRecords returns it: the
    NEW_IMAGE holds the row as `DynamoDBMetadataStore` wrote it (`pk`, `rk`, `etag`, `doc`), and
    the document of an event row (`modelrepo.outbox`) holds the CloudEvent. Other rows (counters,
    versions, ...) and other changes are not events; the event source mapping's filter keeps them
    away, and they are skipped here too.
    """
    change = record.get("dynamodb")
    if not isinstance(change, Mapping):
        raise MalformedStreamRecord("the record is not a DynamoDB stream record (no 'dynamodb')")
    row = _attribute(change.get("Keys"), "rk")
    if record.get("eventName") != "INSERT" or not row.startswith(EVENT_PREFIX):
        return None
    sequence = change.get("SequenceNumber")
    if not isinstance(sequence, str) or not re.fullmatch(STREAM_SEQUENCE, sequence):
        raise MalformedStreamRecord("the stream record has no SequenceNumber")
    image = change.get("NewImage")
    if image is None:
        raise MalformedStreamRecord("the stream record has no NewImage: the stream must show NEW_IMAGE")
    try:
        event = event_of(json.loads(_attribute(image, "doc")))
    except (ValueError, KeyError, TypeError) as problem:
        raise MalformedStreamRecord(f"row {row!r} does not hold a CloudEvent ({type(problem).__name__})") from None
    return StreamedEvent(stream_partition(record), sequence, event)


class EventBridgePublisher:
    """Puts CloudEvents on the stack's EventBridge bus, one PutEvents call per event, in order.

    One event per call keeps the order of a partition: PutEvents can refuse one entry of a call
    and accept the entries after it, which would let a later event of an experiment overtake an
    earlier one. A refused entry (`FailedEntryCount`) is a failed delivery like a failed call.
    The entry's `detail` is the CloudEvent in structured JSON mode, so a rule can match on any of
    its fields (`detail.type`, `detail.subject`, `detail.data.tags.stage`, ...).
    """

    subscriber = "eventbridge"

    def __init__(self, client: EventBridgeClient, bus: str) -> None:
        self.client = client
        self.bus = bus

    def entry(self, event: CloudEvent) -> PutEventsRequestEntryTypeDef:
        return {
            "Source": EVENTBRIDGE_SOURCE,
            "DetailType": event.type,
            "Detail": json.dumps(event.to_json(), separators=(",", ":")),
            "EventBusName": self.bus,
            "Time": event.time,
        }

    def publish(self, events: Sequence[CloudEvent]) -> None:
        """Each event in turn; raises `DeliveryFailed` at the first one EventBridge did not accept."""
        for event in events:
            try:
                answer = self.client.put_events(Entries=[self.entry(event)])
            except (ClientError, BotoCoreError) as error:
                raise DeliveryFailed(f"putting event {event.id} on {self.bus}: {_events_error(error)}") from None
            if answer.get("FailedEntryCount", 0):
                refused = answer["Entries"][0] if answer.get("Entries") else {}
                raise DeliveryFailed(
                    f"EventBridge refused event {event.id} "
                    f"({refused.get('ErrorCode', 'no code')}: {refused.get('ErrorMessage', 'no message')})"
                )


def _events_error(error: Exception) -> str:
    if isinstance(error, ClientError):
        return f"EventBridge answered {_code(error) or 'an error'}"
    return f"EventBridge could not be reached ({type(error).__name__})"


class StreamDispatch:
    """One batch of stream records, published in order per partition.

    Lambda retries a stream batch from the lowest sequence number its function reports as failed,
    but Powertools' batch processor goes on with the records after a failed one. So once an event
    of a partition fails, every later record of that partition in the batch is failed too
    (`EventHeldBack`) without being published: no event overtakes an earlier one of its
    experiment, and Lambda delivers them again after it. Records of other partitions go on.
    """

    def __init__(self, publisher: EventBridgePublisher) -> None:
        self.publisher = publisher
        self.failed: dict[str, str] = {}  # partition -> what failed first in it (for the log)

    def publish(self, record: Mapping[str, Any]) -> StreamedEvent | None:
        """Publish one record's event; None if the record is not an event; raises if it failed."""
        sequence = (record.get("dynamodb") or {}).get("SequenceNumber")
        try:
            streamed = streamed_event(record)
        except MalformedStreamRecord:
            with contextlib.suppress(MalformedStreamRecord):
                self.failed.setdefault(stream_partition(record), f"stream record {sequence}")
            raise
        if streamed is None:
            return None
        held = self.failed.get(streamed.partition)
        if held is not None:
            raise EventHeldBack(
                f"event {streamed.event.sequence} of {streamed.partition} waits for {held}, "
                "which failed earlier in this batch"
            )
        try:
            self.publisher.publish([streamed.event])
        except BaseException:  # whatever went wrong, nothing later of this partition may overtake it
            self.failed[streamed.partition] = f"event {streamed.event.sequence}"
            raise
        return streamed


class FailedStreamBatch(BaseModel):
    """What Lambda sends to the on-failure destination when a stream batch used up its retries
    (`DDBStreamBatchInfo` of the invocation record): where the discarded records are in the stream."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    stream_arn: str = Field(alias="streamArn", pattern=r"^arn:[\w-]+:dynamodb:[\w-]+:[0-9]{12}:table/.+/stream/.+$")
    shard_id: str = Field(alias="shardId", min_length=1, max_length=65)
    start_sequence_number: str = Field(alias="startSequenceNumber", pattern=STREAM_SEQUENCE)
    end_sequence_number: str = Field(alias="endSequenceNumber", pattern=STREAM_SEQUENCE)
    batch_size: int = Field(alias="batchSize", ge=1)

    @classmethod
    def from_invocation_record(cls, record: Mapping[str, Any]) -> FailedStreamBatch:
        info = record.get("DDBStreamBatchInfo")
        if not isinstance(info, Mapping):
            raise InvalidInput("not an on-failure record of a DynamoDB stream (no DDBStreamBatchInfo)")
        try:
            return cls.model_validate(info)
        except ValidationError as error:
            raise InvalidInput(f"invalid DDBStreamBatchInfo: {describe_validation_error(error)}") from None


def is_failed_stream_batch(event: Mapping[str, Any]) -> bool:
    return "DDBStreamBatchInfo" in event


class StreamReader:
    """Reads a range of the table's stream again, for replaying a batch from the on-failure queue."""

    def __init__(self, client: DynamoDBStreamsClient, *, max_pages: int = 10_000) -> None:
        self._client = client
        self._max_pages = max_pages

    def records(self, batch: FailedStreamBatch) -> Iterator[dict[str, Any]]:
        """The records from `start_sequence_number` to `end_sequence_number`, in stream order.

        The stream keeps records for 24 hours; a range older than that is gone (TrimmedDataAccess),
        and the table's outbox (`GET /api/experiments/{id}/events?after=`) is where they remain.
        """
        end = int(batch.end_sequence_number)
        try:
            iterator: str | None = self._client.get_shard_iterator(
                StreamArn=batch.stream_arn,
                ShardId=batch.shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=batch.start_sequence_number,
            )["ShardIterator"]
            for _ in range(self._max_pages):
                if not iterator:
                    return  # the shard is closed and read to its end
                page = self._client.get_records(ShardIterator=iterator, Limit=1000)
                for record in page.get("Records", []):
                    sequence = int(record["dynamodb"]["SequenceNumber"])
                    if sequence > end:
                        return
                    yield cast(dict[str, Any], record)
                    if sequence == end:
                        return
                iterator = page.get("NextShardIterator")
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ClientError) and _code(error) == "TrimmedDataAccessException":
                raise StorageError(
                    f"the stream no longer holds records {batch.start_sequence_number}.."
                    f"{batch.end_sequence_number} (kept 24 hours); read them from the events API instead"
                ) from None
            raise _read_error(error, "reading the DynamoDB stream") from None
        raise StorageError(
            f"the stream range {batch.start_sequence_number}..{end} was not read within {self._max_pages} pages"
        )


class ReplayReport(BaseModel):
    """What a replay of a failed stream batch published, and what failed again."""

    model_config = ConfigDict(frozen=True)

    published: int
    skipped: int
    failed: list[str]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def replay_failed_batch(
    reader: StreamReader, publisher: EventBridgePublisher, batch: FailedStreamBatch
) -> ReplayReport:
    """Publish the events of a discarded stream batch again, in stream order.

    Its events come after later ones of the same experiments that were delivered meanwhile;
    consumers put them in place by `sequence` (and drop any they already have by `id`). A record
    that fails again is reported, and its partition's later records are held back as in a batch.
    """
    dispatch = StreamDispatch(publisher)
    published = skipped = 0
    failed: list[str] = []
    for record in reader.records(batch):
        try:
            streamed = dispatch.publish(record)
        except (DeliveryFailed, MalformedStreamRecord) as problem:
            failed.append(f"stream record {record.get('dynamodb', {}).get('SequenceNumber')}: {problem}")
            continue
        if streamed is None:
            skipped += 1
        else:
            published += 1
    return ReplayReport(published=published, skipped=skipped, failed=failed)


# --- settings and assembly -----------------------------------------------------------------------

# The variables template.yaml sets (Globals.Function.Environment) and the settings they fill.
ENVIRONMENT_VARIABLES = {
    "uploads_bucket": "MODELREPO_UPLOADS_BUCKET",
    "registry_bucket": "MODELREPO_REGISTRY_BUCKET",
    "table": "MODELREPO_TABLE",
    "dead_letter_queue_url": "MODELREPO_DEAD_LETTER_QUEUE_URL",
    "register_deadline_seconds": "MODELREPO_REGISTER_DEADLINE_SECONDS",
    "max_body_bytes": "MODELREPO_MAX_BODY_BYTES",
    "event_bus": "MODELREPO_EVENT_BUS",
    "event_source": "MODELREPO_EVENT_SOURCE",
    "default_approval": "MODELREPO_DEFAULT_APPROVAL",
    "actor_must_be_principal": "MODELREPO_ACTOR_MUST_BE_PRINCIPAL",
}
BUCKET_NAME = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
TABLE_NAME = r"^[A-Za-z0-9_.-]{3,255}$"
QUEUE_URL = r"^https?://[^\s/]+(/[^\s/]+)*/[0-9]{12}/[A-Za-z0-9_-]{1,80}$"
EVENT_BUS = r"^(arn:[\w-]+:events:[\w-]+:[0-9]{12}:event-bus/)?[A-Za-z0-9._/-]{1,256}$"
# A CloudEvents `source`: an absolute URI (a URN, a URL, an ARN), without spaces.
EVENT_SOURCE = r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$"


class AwsSettings(BaseModel):
    """Everything the functions and the operator CLI need to know, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uploads_bucket: str = Field(pattern=BUCKET_NAME)
    registry_bucket: str = Field(pattern=BUCKET_NAME)
    table: str = Field(pattern=TABLE_NAME)
    dead_letter_queue_url: str = Field(pattern=QUEUE_URL)
    # API Gateway gives up after 29 s; the core must answer (503 + Retry-After) before that.
    register_deadline_seconds: float = Field(default=10.0, gt=0, le=25)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=6 * 1024 * 1024)
    # Only the dispatcher puts events on the bus; the other functions leave it unset.
    event_bus: str | None = Field(default=None, pattern=EVENT_BUS)
    # The CloudEvents `source` of this repository's events; by default it names the table, so that
    # the functions and the operator CLI (which see the same table) emit under one identity.
    event_source: str | None = Field(default=None, pattern=EVENT_SOURCE, max_length=1024)
    # The approval status new versions start with.
    default_approval: ApprovalStatus = ApprovalStatus.PENDING
    # Changes must name their caller's IAM identity as their actor (else 403).
    actor_must_be_principal: bool = False

    @property
    def source(self) -> str:
        return self.event_source or f"urn:modelrepo:aws:{self.table}"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> AwsSettings:
        values = {name: environ[variable] for name, variable in ENVIRONMENT_VARIABLES.items() if environ.get(variable)}
        try:
            return cls(**values)
        except ValidationError as error:
            raise InvalidInput(f"invalid settings: {describe_validation_error(error)}") from None


def aws_session(environ: Mapping[str, str]) -> boto3.session.Session:
    """Credentials and region from `environ` where it names them, else boto3's own chain.

    The Lambda runtime sets the role's credentials and the region in the environment; an operator
    may instead name a profile.
    """
    key = environ.get("AWS_ACCESS_KEY_ID") or None
    return boto3.session.Session(
        aws_access_key_id=key,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        region_name=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
        profile_name=None if key else environ.get("AWS_PROFILE") or None,
    )


def build_repository(
    settings: AwsSettings, environ: Mapping[str, str], *, sleep: Callable[[float], None] = time.sleep
) -> ModelRepository:
    """The repository on the stack's buckets and table; `sleep` lets a host count the core's retries."""
    session = aws_session(environ)
    endpoint = environ.get("AWS_ENDPOINT_URL") or None
    dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=client_config())

    def s3() -> S3Client:
        return session.client("s3", endpoint_url=endpoint, config=client_config(signature_version="s3v4"))

    return ModelRepository(
        S3ArtifactStore(s3, settings.uploads_bucket, settings.registry_bucket),
        DynamoDBMetadataStore(dynamodb, settings.table),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds, sleep=sleep),
        source=settings.source,
        default_approval=settings.default_approval,
    )


def build_publisher(settings: AwsSettings, environ: Mapping[str, str]) -> EventBridgePublisher:
    """The dispatcher's way out: the stack's event bus (`MODELREPO_EVENT_BUS`)."""
    if settings.event_bus is None:
        raise InvalidInput(f"invalid settings: {ENVIRONMENT_VARIABLES['event_bus']} names no event bus")
    client = aws_session(environ).client(
        "events", endpoint_url=environ.get("AWS_ENDPOINT_URL") or None, config=client_config()
    )
    return EventBridgePublisher(client, settings.event_bus)


def build_stream_reader(environ: Mapping[str, str]) -> StreamReader:
    """Reads the table's stream again when a failed batch is replayed."""
    client = aws_session(environ).client(
        "dynamodbstreams", endpoint_url=environ.get("AWS_ENDPOINT_URL") or None, config=client_config()
    )
    return StreamReader(client)


def open_backend(environ: Mapping[str, str]) -> Backend:
    """What `modelrepo reconcile|dead-letters|replay --backend aws` work on.

    `environ` holds the functions' environment (the stack's outputs under the same names) plus
    the operator's credentials and region, so the CLI sees exactly what the functions see.
    """
    settings = AwsSettings.from_environment(environ)
    session = aws_session(environ)
    sqs = session.client("sqs", endpoint_url=environ.get("AWS_ENDPOINT_URL") or None, config=client_config())
    return Backend(build_repository(settings, environ), SqsDeadLetterQueue(sqs, settings.dead_letter_queue_url))
