"""In-memory fakes of both ports, for fast unit tests of the core (they pass the contract suites)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from modelrepo.errors import ConditionFailed, ObjectChanged, ObjectMissing
from modelrepo.ports import (
    ArtifactStore,
    Delete,
    Item,
    MetadataStore,
    ObjectInfo,
    ObjectListing,
    ProgressCallback,
    Write,
    check_transaction,
)


class MemoryMetadataStore(MetadataStore):
    def __init__(self) -> None:
        self._partitions: dict[str, dict[str, tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)

    def get(self, partition: str, row: str) -> Item | None:
        with self._lock:
            found = self._partitions.get(partition, {}).get(row)
        return None if found is None else Item(partition, row, json.loads(found[1]), found[0])

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        with self._lock:
            rows = dict(self._partitions.get(partition, {}))
        selected = sorted(r for r in rows if r.startswith(prefix) and (after is None or r > after))
        return [Item(partition, r, json.loads(rows[r][1]), rows[r][0]) for r in selected[:limit]]

    def transact(self, writes: Sequence[Write]) -> None:
        partition = check_transaction(writes)
        documents = {w.row: json.dumps(w.data) for w in writes if not isinstance(w, Delete)}
        with self._lock:
            rows = self._partitions.setdefault(partition, {})
            for w in writes:
                current = rows.get(w.row)
                if w.if_match is not None and (current is None or current[0] != w.if_match):
                    raise ConditionFailed(f"row {w.row!r} changed")
                if not isinstance(w, Delete) and w.if_absent and current is not None:
                    raise ConditionFailed(f"row {w.row!r} already exists")
            for w in writes:
                if isinstance(w, Delete):
                    rows.pop(w.row, None)
                else:
                    rows[w.row] = (str(next(self._etags)), documents[w.row])


class MemoryArtifactStore(ArtifactStore):
    """ETags are the MD5 of the bytes, as S3 gives for single-part uploads."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self._pinned: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def head(self, key: str) -> ObjectInfo | None:
        with self._lock:
            found = self._objects.get(key)
        return None if found is None else found[1]

    def _version(self, key: str, etag: str) -> bytes:
        found = self._objects.get(key)
        if found is None:
            raise ObjectMissing(f"no object {key!r}")
        if found[1].etag != etag:
            raise ObjectChanged(f"object {key!r} is no longer version {etag!r}")
        return found[0]

    @contextmanager
    def open(self, key: str, *, etag: str) -> Iterator[BinaryIO]:
        with self._lock:
            data = self._version(key, etag)
        yield io.BytesIO(data)

    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        content = data.read()
        if progress:
            progress(len(content))
        info = ObjectInfo(key, len(content), hashlib.md5(content).hexdigest(), datetime.now(UTC))
        with self._lock:
            self._objects[key] = (content, info)
        return info

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(key, None)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix) and (after is None or k > after))
            page = [self._objects[k][1] for k in keys[:limit]]
        return ObjectListing(page, page[-1].key if len(keys) > limit else None)

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        with self._lock:
            data = self._version(key, etag)
            self._pinned.setdefault(digest, data)

    def put_pinned(self, digest: str, data: bytes) -> None:
        with self._lock:
            self._pinned.setdefault(digest, data)

    def has_pinned(self, digest: str) -> bool:
        with self._lock:
            return digest in self._pinned

    @contextmanager
    def open_pinned(self, digest: str) -> Iterator[BinaryIO]:
        with self._lock:
            data = self._pinned.get(digest)
        if data is None:
            raise ObjectMissing(f"the registry holds no bytes with sha256 {digest}")
        yield io.BytesIO(data)

    def discard_pinned(self, digest: str) -> None:
        with self._lock:
            self._pinned.pop(digest, None)

    def list_pinned(self, *, after: str | None = None, limit: int = 1000) -> tuple[tuple[str, ...], str | None]:
        with self._lock:
            digests = sorted(d for d in self._pinned if after is None or d > after)
        return tuple(digests[:limit]), digests[limit - 1] if len(digests) > limit else None

    def uri_of(self, key: str) -> str:
        return f"memory:///{quote(key)}"

    def key_of_uri(self, uri: str) -> str | None:
        return unquote(uri.removeprefix("memory:///")) if uri.startswith("memory:///") else None

    def replace_raw(self, key: str, content: bytes, **fields: Any) -> ObjectInfo:
        """Test hook: store bytes under a chosen ObjectInfo (e.g. an ETag that lies)."""
        info = ObjectInfo(
            key=key,
            size=len(content),
            etag=fields.get("etag", hashlib.md5(content).hexdigest()),
            modified_at=fields.get("modified_at", datetime.now(UTC)),
        )
        with self._lock:
            self._objects[key] = (content, info)
        return info
