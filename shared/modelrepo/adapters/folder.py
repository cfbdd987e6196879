"""FolderArtifactStore: the embedded ArtifactStore, a local folder as the bucket.

A folder has no server-side ETag, so the ETag of a file is the sha256 of its bytes: rewriting a file
with identical bytes is the same object version, as it is on S3. Digests are cached by
(device, inode, size, mtime, ctime) so a file is read once per change.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

from modelrepo.errors import InvalidInput, ObjectChanged, ObjectMissing
from modelrepo.events import ObjectCreated
from modelrepo.ports import (
    ArtifactStore,
    DeadLetter,
    DeadLetterQueue,
    ObjectInfo,
    ObjectListing,
    ProgressCallback,
    iter_chunks,
)

# Files being written by `put` and `pin`; the watcher ignores them.
TEMP_PREFIX = ".modelrepo-tmp-"
_CACHE_SIZE = 20_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


_PARALLEL_AFTER_BYTES = 8 << 20
_CHUNKS_AHEAD = 4


class _VerifyingReader:
    """Streams a file and, at its end, proves the bytes were the expected version.

    Every caller digests what it reads too (the core hashes artifacts, pinning hashes the copy), so
    past the first few MiB the proof runs on a helper thread (hashlib releases the GIL): a large
    file is hashed twice at the same time instead of one after the other. At most a few chunks
    wait for the helper, so memory stays bounded.
    """

    def __init__(self, stream: BinaryIO, key: str, expected_sha256: str) -> None:
        self._stream = stream
        self._key = key
        self._expected = expected_sha256
        self._digest = hashlib.sha256()
        self._read = 0
        self._pending: queue.Queue[bytes | None] | None = None
        self._helper: threading.Thread | None = None

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._read += len(chunk)
        if self._pending is None and self._read > _PARALLEL_AFTER_BYTES:
            self._pending = queue.Queue(maxsize=_CHUNKS_AHEAD)
            self._helper = threading.Thread(target=self._digest_pending, name="verify-sha256", daemon=True)
            self._helper.start()
        if self._pending is not None:
            if chunk:
                self._pending.put(chunk)
        else:
            self._digest.update(chunk)
        if not chunk or size < 0:
            self.close()
            if self._digest.hexdigest() != self._expected:
                raise ObjectChanged(f"object {self._key!r} changed while it was read")
        return chunk

    def _digest_pending(self) -> None:
        assert self._pending is not None
        while (chunk := self._pending.get()) is not None:
            self._digest.update(chunk)

    def close(self) -> None:
        """Wait for the helper (also when the caller stops reading early)."""
        if self._helper is not None and self._pending is not None:
            self._pending.put(None)
            self._helper.join()
            self._helper = None


class FolderArtifactStore(ArtifactStore):
    def __init__(self, uploads: Path, registry: Path) -> None:
        self.uploads = uploads
        self.registry = registry
        self._pinned_root = os.path.join(registry, "sha256")
        uploads.mkdir(parents=True, exist_ok=True)
        registry.mkdir(parents=True, exist_ok=True)
        self._name_max = os.pathconf(uploads, "PC_NAME_MAX")
        self._digests: OrderedDict[tuple[int, ...], str] = OrderedDict()
        self._lock = threading.Lock()

    # --- paths -----------------------------------------------------------------------------------

    def path_of(self, key: str) -> Path:
        """The file of a key; keys that could escape the uploads folder are refused."""
        segments = key.split("/")
        if (
            not key
            or "\\" in key
            or "\0" in key
            or any(s in ("", ".", "..") for s in segments)
            or segments[-1].startswith(TEMP_PREFIX)
        ):
            raise InvalidInput(f"{key!r} is not a usable object key")
        too_long = next((s for s in segments if len(os.fsencode(s)) > self._name_max), None)
        if too_long is not None:
            raise InvalidInput(
                f"a path segment of {key!r} is {len(os.fsencode(too_long))} bytes; this file system "
                f"allows {self._name_max} per folder or file name"
            )
        return self.uploads.joinpath(*segments)

    def key_of(self, path: Path) -> str:
        return path.relative_to(self.uploads).as_posix()

    def _pinned_path(self, digest: str) -> Path:
        return Path(self._pinned_file(digest))

    def _pinned_file(self, digest: str) -> str:
        """The registry file of a digest, as a plain string: registering checks it every time."""
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise InvalidInput(f"{digest!r} is not a sha256 hex digest")
        return os.path.join(self._pinned_root, digest[:2], digest)

    # --- digests ---------------------------------------------------------------------------------

    def _info(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        fingerprint = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with self._lock:
            digest = self._digests.get(fingerprint)
        if digest is None:
            try:
                with path.open("rb") as stream:
                    sha = hashlib.sha256()
                    for chunk in iter_chunks(stream):
                        sha.update(chunk)
            except FileNotFoundError:
                return None
            digest = sha.hexdigest()
            self._remember(fingerprint, digest)
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=digest,
            modified_at=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC),
            sha256=digest,
            sequencer=f"{stat.st_mtime_ns:020d}",
        )

    def _remember(self, fingerprint: tuple[int, ...], digest: str) -> None:
        with self._lock:
            self._digests[fingerprint] = digest
            while len(self._digests) > _CACHE_SIZE:
                self._digests.popitem(last=False)

    # --- uploads ---------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        return self._info(key, self.path_of(key))

    @contextmanager
    def open(self, key: str, *, etag: str) -> Iterator[BinaryIO]:
        try:
            stream = self.path_of(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectMissing(f"no object {key!r}") from None
        with stream:
            reader = _VerifyingReader(stream, key, etag)
            try:
                yield cast(BinaryIO, reader)
            finally:
                reader.close()

    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = self._write_atomically(data, path, progress)
        stat = path.stat()
        self._remember((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns), digest)
        info = self._info(key, path)
        assert info is not None
        return info

    @staticmethod
    def _write_atomically(data: BinaryIO, path: Path, progress: ProgressCallback | None) -> str:
        """Write to a temporary file beside `path`, then rename it into place; return the sha256."""
        temp = path.with_name(f"{TEMP_PREFIX}{os.urandom(6).hex()}")
        sha = hashlib.sha256()
        try:
            with temp.open("xb") as out:
                for chunk in iter_chunks(data):
                    out.write(chunk)
                    sha.update(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return sha.hexdigest()

    def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        keys: list[str] = []
        for folder, dirs, files in os.walk(self.uploads):
            dirs.sort()
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = self.key_of(Path(folder) / name)
                if key.startswith(prefix) and (after is None or key > after):
                    keys.append(key)
        keys.sort()
        objects = [info for key in keys[:limit] if (info := self._info(key, self.path_of(key)))]
        return ObjectListing(objects, keys[limit - 1] if len(keys) > limit else None)

    # --- registry --------------------------------------------------------------------------------

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        target = self._pinned_path(digest)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.open(key, etag=etag) as source:
            copied = self._write_atomically(source, target, None)
        if copied != digest:
            target.unlink(missing_ok=True)
            raise ObjectChanged(f"object {key!r} does not have the sha256 it was recorded with")
        target.chmod(0o444)

    def put_pinned(self, digest: str, data: bytes) -> None:
        target = self._pinned_path(digest)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(io.BytesIO(data), target, None)
        target.chmod(0o444)

    def has_pinned(self, digest: str) -> bool:
        return os.path.isfile(self._pinned_file(digest))

    @contextmanager
    def open_pinned(self, digest: str) -> Iterator[BinaryIO]:
        try:
            stream = self._pinned_path(digest).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"the registry holds no bytes with sha256 {digest}") from None
        with stream:
            yield stream

    def discard_pinned(self, digest: str) -> None:
        self._pinned_path(digest).unlink(missing_ok=True)

    def uri_of(self, key: str) -> str:
        return self.path_of(key).as_uri()

    def key_of_uri(self, uri: str) -> str | None:
        """A file URI or an absolute path inside the drop folder."""
        if uri.startswith("file://"):
            parts = urlsplit(uri)
            if parts.netloc not in ("", "localhost"):
                return None
            path = Path(unquote(parts.path))
        elif uri.startswith("/"):
            path = Path(uri)
        else:
            return None
        try:
            relative = path.relative_to(self.uploads)
        except ValueError:
            return None
        key = relative.as_posix()
        return key + "/" if uri.endswith("/") and key != "." else (key if key != "." else "")

    def list_pinned(self, *, after: str | None = None, limit: int = 1000) -> tuple[tuple[str, ...], str | None]:
        digests: list[str] = []
        root = Path(self._pinned_root)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if not folder.is_dir() or (after is not None and folder.name < after[:2]):
                continue
            digests.extend(
                p.name for p in folder.iterdir() if _SHA256_HEX.fullmatch(p.name) and (after is None or p.name > after)
            )
            if len(digests) > limit:
                break
        digests.sort()
        return tuple(digests[:limit]), digests[limit - 1] if len(digests) > limit else None


class FolderDeadLetterQueue(DeadLetterQueue):
    """The local runtime's dead letters: one JSON file per upload the watcher gave up on."""

    SOURCE = "local"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def park(self, event: ObjectCreated, detail: str) -> DeadLetter:
        self.folder.mkdir(parents=True, exist_ok=True)
        failed_at = datetime.now(UTC)
        handle = f"{time.time_ns():020d}-{os.urandom(4).hex()}.json"
        document = {"event": event.to_json(), "detail": detail, "failedAt": failed_at.isoformat()}
        temp = self.folder / f"{TEMP_PREFIX}{handle}"
        temp.write_text(json.dumps(document, ensure_ascii=False))
        os.replace(temp, self.folder / handle)
        return DeadLetter(handle, self.SOURCE, (event,), failed_at, detail)

    def peek(self, limit: int = 100) -> list[DeadLetter]:
        if not self.folder.is_dir():
            return []
        handles = sorted(p.name for p in self.folder.glob("*.json") if not p.name.startswith(TEMP_PREFIX))
        return [self._read(handle) for handle in handles[:limit]]

    def _read(self, handle: str) -> DeadLetter:
        try:
            document = json.loads((self.folder / handle).read_text())
            event = ObjectCreated.from_json(document["event"])
            failed_at = datetime.fromisoformat(document["failedAt"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            return DeadLetter(handle, self.SOURCE, (), None, f"unreadable dead letter: {error}")
        return DeadLetter(handle, self.SOURCE, (event,), failed_at, str(document.get("detail", "")))

    def remove(self, letter: DeadLetter) -> None:
        if "/" in letter.handle or letter.handle.startswith("."):
            raise InvalidInput(f"{letter.handle!r} is not a dead letter of this folder")
        (self.folder / letter.handle).unlink(missing_ok=True)
