"""S3ArtifactStore and DynamoDBMetadataStore: the ports on AWS, with boto3.

Only this module (and the Lambda bootstrap that builds the clients) touches boto3; every SDK error
is translated into `modelrepo.errors` here, so handlers never see a botocore exception.

Retries of individual calls are botocore's (standard or adaptive mode, configured on the client);
an error that still surfaces here has outlasted them. The core's own retry loop then decides.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, cast
from urllib.parse import quote

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

from modelrepo.errors import (
    ConditionFailed,
    InvalidInput,
    ObjectChanged,
    ObjectMissing,
    OutcomeUnknown,
    StorageError,
    Throttled,
)
from modelrepo.ports import (
    ArtifactStore,
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

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef
    from mypy_boto3_s3 import S3Client

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
        client: S3Client,
        uploads_bucket: str,
        registry_bucket: str,
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunk: int = MULTIPART_CHUNK,
    ) -> None:
        self._client = client
        self.uploads_bucket = uploads_bucket
        self.registry_bucket = registry_bucket
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunk, use_threads=False
        )

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


class DynamoDBMetadataStore(MetadataStore):
    """One table, string keys `pk` (partition) and `rk` (row), attributes `etag` and `doc`.

    `etag` is a random token written with every change, so a conditional write on it detects any
    intervening write, even one that left the document unchanged. `doc` is the document as one JSON
    string: documents stay opaque to DynamoDB and keep their exact JSON types.
    """

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self.table = table

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
        our own write. Only when no attempt gets an answer is the outcome unknown.
        """
        check_transaction(writes)
        items = [self._transact_item(w) for w in writes]
        try:
            self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
        except (ClientError, BotoCoreError) as error:
            raise _write_error(error) from None

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
