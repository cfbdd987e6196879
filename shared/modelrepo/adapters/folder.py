"""FolderArtifactStore: the embedded ArtifactStore, a local folder as the bucket.

A folder has no server-side ETag, so the ETag of a file is the sha256 of its bytes: rewriting a file
with identical bytes is the same object version, as it is on S3.

Nothing outside the root is ever read. Every path is walked one folder at a time from the root with
`O_NOFOLLOW` (`openat`-style, through `dir_fd`), and only regular files with a single link are
objects: a symlink, a FIFO, a device or socket, a symlinked folder, or a file with a second hard
link (whose other name may lie anywhere on the file system, where the server cannot see it) is
*refused* with a reason, never opened for reading. A size is always the number of bytes digested.

A folder has no upload order either, and file times are no substitute (`cp -p`, `mv` of a file
written earlier and reproducible builds all produce old or equal mtimes). The store therefore keeps
a ledger (`drop-folder.sqlite3`) of every file version it has *seen*, by (device, inode, size,
mtime, ctime): the first time a version is seen it gets the next sequencer of a clock that only
moves forward and is shared by every process on the root, so the last completed write of a path
always has the highest sequencer.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import queue
import re
import signal
import sqlite3
import stat as stat_module
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

from modelrepo.errors import (
    InsufficientStorage,
    InvalidInput,
    ObjectChanged,
    ObjectMissing,
    StorageError,
    StoreUnavailable,
    Throttled,
)
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

log = logging.getLogger(__name__)

# Files being written by `put`, `pin` and `park`. Their writers hold an exclusive `flock` until the
# file is renamed into place, which tells a live writer's file from a crashed writer's leftover.
TEMP_PREFIX = ".modelrepo-tmp-"
RESERVED_NAME = (
    f"a name starting with {TEMP_PREFIX!r}, which is reserved for modelrepo's temporary files "
    "(rename it; if it is a crashed upload's leftover, delete it)"
)
LEDGER_NAME = "drop-folder.sqlite3"
_CACHE_SIZE = 20_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
_ATTEMPTS = 3

Fingerprint = tuple[int, int, int, int, int]


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


# --- what a drop-folder entry is -----------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """An entry of the drop folder that is not an object, why, and what identifies this entry
    (never read from the entry itself: a symlink's target is never opened)."""

    key: str
    reason: str
    etag: str
    size: int
    modified_at: datetime

    def event(self, actor: str) -> ObjectCreated:
        return ObjectCreated(key=self.key, etag=self.etag, size=self.size, uploaded_at=self.modified_at, actor=actor)


@dataclass(frozen=True)
class StillWriting:
    """A file some process still holds open for writing: not complete, so not an object yet."""

    key: str


Examined = ObjectInfo | Refused | StillWriting | None


def _fingerprint(stat: os.stat_result) -> Fingerprint:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _modified_at(stat: os.stat_result) -> datetime:
    return datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)


def _kind_refusal(stat: os.stat_result) -> str | None:
    """Why an entry with this (lstat) status is not an object, or None if it may be one."""
    mode = stat.st_mode
    only_regular = "the drop folder records regular files only"
    if stat_module.S_ISLNK(mode):
        return f"a symbolic link: {only_regular} and follows no links (copy the file in instead)"
    if stat_module.S_ISFIFO(mode):
        return f"a FIFO (named pipe): {only_regular}"
    if stat_module.S_ISSOCK(mode):
        return f"a socket: {only_regular}"
    if stat_module.S_ISCHR(mode) or stat_module.S_ISBLK(mode):
        return f"a device file: {only_regular}"
    if not stat_module.S_ISREG(mode):
        return f"not a regular file: {only_regular}"
    if stat.st_nlink > 1:
        return (
            f"a file with {stat.st_nlink} hard links: another name of it may lie outside the drop folder, "
            "so it is not read (copy the file in instead)"
        )
    return None


def _entry_etag(stat: os.stat_result) -> str:
    """Identifies a refused entry's version without reading it."""
    return f"{stat.st_mode >> 12:o}-{stat.st_ino:x}-{stat.st_ctime_ns:x}"


def _storage_failure(error: OSError, what: str) -> StorageError:
    """An OS error of a store as the error the core and the hosts understand, naming the store."""
    reason = error.strerror or str(error)
    if error.errno in _OUT_OF_SPACE:
        return InsufficientStorage(f"{what} is out of space: {reason}")
    return StoreUnavailable(f"{what} cannot be written: {reason}")


def _ledger_failure(error: sqlite3.Error, what: str) -> StorageError:
    code = getattr(error, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return Throttled(f"{what} is busy: {error}")
    if primary == sqlite3.SQLITE_FULL:
        return InsufficientStorage(f"{what} is out of space: {error}")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StoreUnavailable(
            f"{what} is not a usable SQLite database ({error}); delete it and start again: it is rebuilt "
            "from the files, and newer uploads still win"
        )
    return StoreUnavailable(f"{what} cannot be used: {error}")


# --- walking without following links -------------------------------------------------------------


class _LinkedFolder(Exception):
    def __init__(self, segment: str) -> None:
        super().__init__(segment)
        self.segment = segment


# What _folder says of a segment that is a file where a folder should be (to readers: no such object).
NOT_A_FOLDER = "not a folder"


@contextmanager
def _folder(base: str, segments: Sequence[str], *, create: bool = False) -> Iterator[int]:
    """A descriptor of `base/segments…`, each segment opened with O_NOFOLLOW under the previous one.

    Raises FileNotFoundError if a segment is missing (and not created), _LinkedFolder if one is a
    symlink or not a folder that should be one."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for segment in segments:
            if create:
                with suppress(FileExistsError):
                    os.mkdir(segment, 0o777, dir_fd=fd)
            try:
                inner = os.open(segment, _DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                    raise
                try:
                    linked = stat_module.S_ISLNK(os.stat(segment, dir_fd=fd, follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    raise FileNotFoundError(errno.ENOENT, "no such folder", segment) from None
                if linked:
                    raise _LinkedFolder(segment) from None
                raise FileNotFoundError(errno.ENOENT, NOT_A_FOLDER, segment) from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _open_regular(base: str, segments: Sequence[str], missing: str) -> BinaryIO:
    """A regular, single-link file under `base`, opened without following any link."""
    try:
        with _folder(base, segments[:-1]) as parent:
            fd = os.open(segments[-1], _READ_FLAGS, dir_fd=parent)
    except (OSError, _LinkedFolder):
        raise ObjectMissing(missing) from None
    stat = os.fstat(fd)
    if _kind_refusal(stat) is not None:
        os.close(fd)
        raise ObjectMissing(missing)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _create_locked_temp(folder: int, mode: int) -> tuple[int, str]:
    """A new temporary file in `folder` with `mode` (less the umask), open for writing and holding
    an exclusive flock."""
    while True:
        name = f"{TEMP_PREFIX}{os.urandom(6).hex()}"
        fd = os.open(name, _TEMP_FLAGS, mode, dir_fd=folder)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, name
        # In the instant between creating and locking it, a sweep took it for a crashed writer's.
        os.close(fd)


def _is_stale(folder: int, name: str, *, remove: bool) -> bool:
    """Whether a temporary file's writer is gone (nobody holds its flock); removed if `remove`."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer
        now = os.stat(name, dir_fd=folder, follow_symlinks=False)
        held = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False  # renamed into place meanwhile; the name is someone else's now
        if remove:
            os.unlink(name, dir_fd=folder)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _temp_files(top: Path) -> Iterator[tuple[str, str]]:
    """(folder, name) of every temporary file under `top`, never descending into a linked folder."""
    if not top.is_dir():
        return
    for parent, _dirs, files in os.walk(top):
        for name in files:
            if name.startswith(TEMP_PREFIX):
                yield parent, name


def _sweep_temp_files(top: Path, *, remove: bool = True) -> list[str]:
    """The temporary files under `top` whose writer is gone; removed unless `remove` is False."""
    stale: list[str] = []
    for parent, name in list(_temp_files(top)):
        try:
            folder = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _is_stale(folder, name, remove=remove):
                stale.append(os.path.join(parent, name))
                if remove:
                    log.info("removed %s, a temporary file left by a crashed writer", os.path.join(parent, name))
        finally:
            os.close(folder)
    return stale


def stale_temp_files(top: Path) -> list[str]:
    """Temporary files under `top` left by crashed writers (looked at, not removed)."""
    return _sweep_temp_files(top, remove=False)


def verify_pinned(registry: Path) -> Iterator[tuple[str, str | None]]:
    """Every entry of a registry folder and what is wrong with it (None: its bytes have its digest).

    Read-only; the temporary files of writers are not entries and are left out."""
    top = registry / "sha256"
    if not top.is_dir():
        return
    base = os.fspath(registry)
    for parent, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            if name.startswith(TEMP_PREFIX):
                continue
            path = os.path.join(parent, name)
            if not _SHA256_HEX.fullmatch(name) or os.path.basename(parent) != name[:2]:
                yield path, "not a registry entry (its name is not a sha256 under its first two digits)"
                continue
            sha = hashlib.sha256()
            try:
                with _open_regular(base, ["sha256", name[:2], name], "unreadable") as stream:
                    for chunk in iter_chunks(stream):
                        sha.update(chunk)
            except (ObjectMissing, OSError):
                yield path, "not a regular file with a single link, or unreadable"
                continue
            actual = sha.hexdigest()
            yield path, None if actual == name else f"its bytes have sha256 {actual}, not the one it is named by"


# --- who still writes a file ---------------------------------------------------------------------

WRITING, IDLE = True, False


class _WriterProbe:
    """Whether any process holds a file open for writing, asked the kernel through a read lease.

    `F_SETLEASE(F_RDLCK)` fails with EAGAIN exactly while anyone has the file open for writing (or
    mapped writable), atomically and in O(1), whoever the writer is. We hold the lease for no
    longer than the two calls take; a writer opening the file in that instant waits for the
    release, and its lease-break signal is redirected to SIGURG (ignored by default) instead of
    SIGIO (which would end the process). The alternative, scanning /proc/*/fdinfo, costs a look
    at every descriptor of every process and only sees processes we may ptrace.

    Leases are missing off Linux and refused on some file systems (NFS, FUSE: EINVAL), when
    disabled (fs.leases-enable=0) or for files of another user without CAP_LEASE (EACCES). Then
    the answer is None: the caller cannot tell, and the watcher falls back to quiet periods
    (logged once per cause, since half-written files may then be recorded if a writer pauses).
    """

    def __init__(self, where: Path) -> None:
        self._where = where
        self._warned: set[int] = set()
        self._setlease: int | None = getattr(fcntl, "F_SETLEASE", None)
        self._setsig: int | None = getattr(fcntl, "F_SETSIG", None)

    def writing(self, fd: int) -> bool | None:
        if self._setlease is None:
            self._warn(0, "this system has no file leases")
            return None
        try:
            if self._setsig is not None:
                fcntl.fcntl(fd, self._setsig, signal.SIGURG)
            fcntl.fcntl(fd, self._setlease, fcntl.F_RDLCK)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return WRITING
            self._warn(error.errno or -1, f"a file lease was refused ({error.strerror})")
            return None
        fcntl.fcntl(fd, self._setlease, fcntl.F_UNLCK)
        return IDLE

    def _warn(self, cause: int, reason: str) -> None:
        if cause in self._warned:
            return
        self._warned.add(cause)
        log.warning(
            "cannot tell whether files in %s are still open for writing: %s. A file is then taken as "
            "complete once its writer closed it or it was renamed into place, else after a quiet "
            "period, so a writer that pauses longer than that may have a partial file recorded "
            "(it is recorded again, complete, when it closes the file)",
            self._where,
            reason,
        )


# --- the ledger of seen versions -----------------------------------------------------------------

_LEDGER_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, version TEXT NOT NULL, sequencer INTEGER NOT NULL) "
    "WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL)",
)


class SeenLedger:
    """The order in which this root's file versions were seen, shared by every process on it.

    A sequencer is max(last + 1, the wall clock in ns): strictly increasing through the clock
    row, and still ahead of what was recorded before if the ledger file is ever lost. Each is
    assigned inside one `BEGIN IMMEDIATE` transaction that first checks the file still is the
    version seen, so two processes agree on the order of what they saw.
    """

    def __init__(self, path: Path, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._clock = clock
        self._what = f"the drop folder's ledger {path}"
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[Fingerprint, int]] = OrderedDict()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _LEDGER_SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as error:
            raise _ledger_failure(error, self._what) from None

    @staticmethod
    def _version(fingerprint: Fingerprint) -> str:
        return ":".join(str(n) for n in fingerprint)

    def assign(self, key: str, fingerprint: Fingerprint, still: Callable[[], bool]) -> int | None:
        """The sequencer of this version (a new one if nobody saw it yet); None if `still()` says
        the file changed meanwhile.

        One transaction reads and, for a version nobody saw, writes: a read of its own first would
        hold the ledger's lock twice for every new file, and the record workers queue at that lock."""
        version = self._version(fingerprint)
        with self._lock:
            remembered = self._known.get(key)
            if remembered is not None and remembered[0] == fingerprint:
                return remembered[1]
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    row = db.execute("SELECT version, sequencer FROM seen WHERE key = ?", (key,)).fetchone()
                    if row is not None and row[0] == version:
                        sequencer = int(row[1])
                    elif not still():
                        db.execute("ROLLBACK")
                        return None
                    else:
                        last = db.execute("SELECT last FROM clock WHERE id = 0").fetchone()
                        sequencer = max((last[0] if last else 0) + 1, self._clock())
                        db.execute("INSERT OR REPLACE INTO clock (id, last) VALUES (0, ?)", (sequencer,))
                        db.execute(
                            "INSERT OR REPLACE INTO seen (key, version, sequencer) VALUES (?, ?, ?)",
                            (key, version, sequencer),
                        )
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as error:
                raise _ledger_failure(error, self._what) from None
            self._remember(key, fingerprint, sequencer)
            return sequencer

    def _remember(self, key: str, fingerprint: Fingerprint, sequencer: int) -> None:
        self._known[key] = (fingerprint, sequencer)
        self._known.move_to_end(key)
        while len(self._known) > _CACHE_SIZE:
            self._known.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- the store -----------------------------------------------------------------------------------


class FolderArtifactStore(ArtifactStore):
    def __init__(self, uploads: Path, registry: Path, *, ledger: Path | None = None) -> None:
        self.uploads = uploads
        self.registry = registry
        self._uploads = os.fspath(uploads)
        self._registry = os.fspath(registry)
        self._pinned_root = os.path.join(registry, "sha256")
        try:
            uploads.mkdir(parents=True, exist_ok=True)
            registry.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _storage_failure(error, f"the repository folder {uploads.parent}") from None
        self._name_max = os.pathconf(uploads, "PC_NAME_MAX")
        self._digests: OrderedDict[Fingerprint, str] = OrderedDict()
        self._lock = threading.Lock()
        self._ledger = SeenLedger(ledger or uploads.parent / LEDGER_NAME)
        self._writers = _WriterProbe(uploads)

    # --- paths -----------------------------------------------------------------------------------

    def _segments(self, key: str, *, reserved_ok: bool = False) -> list[str]:
        segments = key.split("/")
        if (
            not key
            or "\\" in key
            or "\0" in key
            or any(s in ("", ".", "..") for s in segments)
            or (not reserved_ok and segments[-1].startswith(TEMP_PREFIX))
        ):
            raise InvalidInput(f"{key!r} is not a usable object key")
        too_long = next((s for s in segments if len(os.fsencode(s)) > self._name_max), None)
        if too_long is not None:
            raise InvalidInput(
                f"a path segment of {key!r} is {len(os.fsencode(too_long))} bytes; this file system "
                f"allows {self._name_max} per folder or file name"
            )
        return segments

    def path_of(self, key: str) -> Path:
        """The file of a key; keys that could escape the uploads folder are refused."""
        return self.uploads.joinpath(*self._segments(key))

    def key_of(self, path: Path) -> str:
        return path.relative_to(self.uploads).as_posix()

    def _pinned_file(self, digest: str) -> str:
        """The registry file of a digest, as a plain string: registering checks it every time."""
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise InvalidInput(f"{digest!r} is not a sha256 hex digest")
        return os.path.join(self._pinned_root, digest[:2], digest)

    # --- examining uploads -----------------------------------------------------------------------

    def examine(self, key: str) -> Examined:
        """What the drop folder holds at `key`: an object, a refused entry, a file still open for
        writing, or nothing. Raises InvalidInput for keys the store cannot address."""
        return self._examine(key, writers=True)

    def _examine(self, key: str, *, writers: bool) -> Examined:
        segments = self._segments(key, reserved_ok=True)
        try:
            with _folder(self._uploads, segments[:-1]) as parent:
                return self._examine_in(parent, key, segments[-1], writers=writers)
        except _LinkedFolder as linked:
            return Refused(
                key,
                f"under the symbolic link {linked.segment!r}: the drop folder follows no links",
                etag=f"linked-folder-{linked.segment}",
                size=0,
                modified_at=datetime.now(UTC),
            )
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _examine_in(self, parent: int, key: str, name: str, *, writers: bool) -> Examined:
        reserved = name.startswith(TEMP_PREFIX)
        for _ in range(_ATTEMPTS):
            try:
                entry = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat_module.S_ISDIR(entry.st_mode):
                return None  # a folder now stands where a file was: nothing to judge
            refusal = _kind_refusal(entry)
            if refusal is not None:
                size = entry.st_size if stat_module.S_ISREG(entry.st_mode) else 0
                return Refused(key, refusal, _entry_etag(entry), size, _modified_at(entry))
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                return None
            except OSError as error:
                if error.errno == errno.ELOOP:
                    continue  # became a symlink since the look above: look again
                raise
            try:
                stat = os.fstat(fd)
                if (stat.st_dev, stat.st_ino) != (entry.st_dev, entry.st_ino) or _kind_refusal(stat):
                    continue  # replaced between the look and the open
                if reserved:
                    if self._in_use(fd):
                        return StillWriting(key)
                    return Refused(key, RESERVED_NAME, _entry_etag(stat), stat.st_size, _modified_at(stat))
                if writers and self._writers.writing(fd) is WRITING:
                    return StillWriting(key)
                info = self._describe(key, fd, stat, functools.partial(self._still, parent, name, stat))
            finally:
                os.close(fd)
            if info is not None:
                return info
        raise ObjectChanged(f"object {key!r} kept changing while it was read")

    def _in_use(self, fd: int) -> bool:
        """A temporary file whose writer is alive: it holds the flock, or the file open for writing."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return self._writers.writing(fd) is WRITING

    @staticmethod
    def _still(parent: int, name: str, seen: os.stat_result) -> bool:
        try:
            now = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        return _fingerprint(now) == _fingerprint(seen) and stat_module.S_ISREG(now.st_mode)

    def _describe(self, key: str, fd: int, stat: os.stat_result, still: Callable[[], bool]) -> ObjectInfo | None:
        """The object version open as `fd`; None if it changed while it was looked at."""
        fingerprint = _fingerprint(stat)
        with self._lock:
            digest = self._digests.get(fingerprint)
        if digest is None:
            digest = self._digest_of(fd, stat.st_size)
            if digest is None or _fingerprint(os.fstat(fd)) != fingerprint:
                return None
            self._remember(fingerprint, digest)
        sequencer = self._ledger.assign(key, fingerprint, still)
        if sequencer is None:
            return None
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=digest,
            modified_at=_modified_at(stat),
            sha256=digest,
            sequencer=f"{sequencer:020d}",
        )

    @staticmethod
    def _digest_of(fd: int, size: int) -> str | None:
        """sha256 of the file's bytes; None unless exactly `size` bytes were read (so the size
        recorded is always the number of bytes digested)."""
        sha = hashlib.sha256()
        read = 0
        offset = 0
        while True:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                break
            sha.update(chunk)
            offset += len(chunk)
            read += len(chunk)
        return sha.hexdigest() if read == size else None

    def _remember(self, fingerprint: Fingerprint, digest: str) -> None:
        with self._lock:
            self._digests[fingerprint] = digest
            while len(self._digests) > _CACHE_SIZE:
                self._digests.popitem(last=False)

    # --- uploads ---------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        found = self._examine(key, writers=False)
        return found if isinstance(found, ObjectInfo) else None

    @contextmanager
    def open(self, key: str, *, etag: str) -> Iterator[BinaryIO]:
        segments = self._segments(key)
        stream = _open_regular(self._uploads, segments, f"no object {key!r}")
        with stream:
            reader = _VerifyingReader(stream, key, etag)
            try:
                yield cast(BinaryIO, reader)
            finally:
                reader.close()

    def put(self, key: str, data: BinaryIO, *, progress: ProgressCallback | None = None) -> ObjectInfo:
        segments = self._segments(key)
        try:
            with _folder(self._uploads, segments[:-1], create=True) as parent:
                with suppress(FileNotFoundError):
                    if stat_module.S_ISDIR(os.stat(segments[-1], dir_fd=parent, follow_symlinks=False).st_mode):
                        raise InvalidInput(f"{key!r} is a folder of other objects; no object can take its name")
                digest = self._write_atomically(data, parent, segments[-1], progress, 0o666, "the drop folder")
        except _LinkedFolder as linked:
            raise InvalidInput(f"the folder {linked.segment!r} of {key!r} is a symbolic link") from None
        except OSError as error:
            if error.strerror == NOT_A_FOLDER:
                raise InvalidInput(f"a folder of {key!r} is an object already; an object holds no others") from None
            raise _storage_failure(error, f"the drop folder {self.uploads}") from None
        info = self.head(key)
        if info is None or info.etag != digest:
            raise ObjectChanged(f"object {key!r} was replaced right after it was written")
        return info

    def _write_atomically(
        self,
        data: BinaryIO,
        folder: int,
        name: str,
        progress: ProgressCallback | None,
        mode: int,
        what: str,
        *,
        expect: str | None = None,
    ) -> str:
        """Write to a locked temporary file in `folder`, then rename it to `name`; return the sha256.

        With `expect`, bytes with another sha256 are never renamed into place (ObjectChanged)."""
        try:
            fd, temp = _create_locked_temp(folder, mode)
        except OSError as error:
            raise _storage_failure(error, what) from None
        sha = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                for chunk in iter_chunks(data):
                    out.write(chunk)
                    sha.update(chunk)
                    if progress:
                        progress(len(chunk))
            if expect is not None and sha.hexdigest() != expect:
                raise ObjectChanged(f"the bytes written to {what} do not have sha256 {expect}")
            os.fsync(fd)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            stat = os.fstat(fd)  # after the rename, which changes the file's ctime
        except BaseException as error:
            with suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            if isinstance(error, OSError):
                raise _storage_failure(error, what) from None
            raise
        finally:
            os.close(fd)
        digest = sha.hexdigest()
        self._remember(_fingerprint(stat), digest)
        return digest

    def delete(self, key: str) -> None:
        segments = self._segments(key)
        try:
            with _folder(self._uploads, segments[:-1]) as parent:
                os.unlink(segments[-1], dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError, _LinkedFolder):
            pass

    def list(self, prefix: str = "", *, after: str | None = None, limit: int = 1000) -> ObjectListing:
        """Objects only: refused entries and files still open for writing are not listed (the
        watcher records the refusals; a file being written is listed once it is closed)."""
        keys: list[str] = []
        for folder, dirs, files in os.walk(self.uploads):
            dirs.sort()
            for name in files:
                key = self.key_of(Path(folder) / name)
                if key.startswith(prefix) and (after is None or key > after):
                    keys.append(key)
        keys.sort()
        objects: list[ObjectInfo] = []
        for key in keys[:limit]:
            try:
                found = self._examine(key, writers=True)
            except InvalidInput:
                continue
            if isinstance(found, ObjectInfo):
                objects.append(found)
        return ObjectListing(objects, keys[limit - 1] if len(keys) > limit else None)

    # --- registry --------------------------------------------------------------------------------

    def pin(self, key: str, *, etag: str, digest: str) -> None:
        if self.has_pinned(digest):
            return
        what = f"the registry {self.registry}"
        with self.open(key, etag=etag) as source:
            try:
                with _folder(self._registry, ["sha256", digest[:2]], create=True) as folder:
                    self._write_atomically(source, folder, digest, None, 0o444, what, expect=digest)
            except ObjectChanged:
                raise ObjectChanged(f"object {key!r} does not have the sha256 it was recorded with") from None
            except _LinkedFolder as linked:
                raise StoreUnavailable(f"{what} is unsafe: {linked.segment!r} is a symbolic link") from None
            except OSError as error:
                raise _storage_failure(error, what) from None

    def put_pinned(self, digest: str, data: bytes) -> None:
        if self.has_pinned(digest):
            return
        what = f"the registry {self.registry}"
        try:
            with _folder(self._registry, ["sha256", digest[:2]], create=True) as folder:
                self._write_atomically(io.BytesIO(data), folder, digest, None, 0o444, what, expect=digest)
        except _LinkedFolder as linked:
            raise StoreUnavailable(f"{what} is unsafe: {linked.segment!r} is a symbolic link") from None
        except OSError as error:
            raise _storage_failure(error, what) from None

    def has_pinned(self, digest: str) -> bool:
        try:
            return stat_module.S_ISREG(os.stat(self._pinned_file(digest), follow_symlinks=False).st_mode)
        except OSError:
            return False

    @contextmanager
    def open_pinned(self, digest: str) -> Iterator[BinaryIO]:
        self._pinned_file(digest)
        stream = _open_regular(
            self._registry, ["sha256", digest[:2], digest], f"the registry holds no bytes with sha256 {digest}"
        )
        with stream:
            yield stream

    def discard_pinned(self, digest: str) -> None:
        self._pinned_file(digest)
        try:
            with _folder(self._registry, ["sha256", digest[:2]]) as folder:
                os.unlink(digest, dir_fd=folder)
        except (FileNotFoundError, NotADirectoryError, _LinkedFolder):
            pass

    # --- upkeep ----------------------------------------------------------------------------------

    def remove_stale_temp_files(self) -> int:
        """Remove the registry's temporary files whose writer crashed (a live writer holds its
        flock, so it is never disturbed). The drop folder's are not touched: a file there named
        like one may be a user's, and is listed as a rejection instead."""
        return len(_sweep_temp_files(self.registry))

    def verify_pinned(self) -> Iterator[tuple[str, str | None]]:
        return verify_pinned(self.registry)

    @staticmethod
    def holds_pinned(registry: Path) -> bool:
        """Whether a registry folder holds any pinned bytes (a sign that versions were registered)."""
        top = registry / "sha256"
        if not top.is_dir():
            return False
        return any(not name.startswith(TEMP_PREFIX) for _parent, _dirs, files in os.walk(top) for name in files)

    def close(self) -> None:
        self._ledger.close()

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
        what = f"the dead-letter folder {self.folder}"
        failed_at = datetime.now(UTC)
        handle = f"{time.time_ns():020d}-{os.urandom(4).hex()}.json"
        document = {"event": event.to_json(), "detail": detail, "failedAt": failed_at.isoformat()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise _storage_failure(error, what) from None
        try:
            fd, temp = _create_locked_temp(folder, 0o666)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as out:
                    out.write(json.dumps(document, ensure_ascii=False))
                os.fsync(fd)
                os.replace(temp, handle, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise
            finally:
                os.close(fd)
        except OSError as error:
            raise _storage_failure(error, what) from None
        finally:
            os.close(folder)
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

    def remove_stale_temp_files(self) -> int:
        """Remove temporary files of letters whose writer crashed while parking them."""
        return len(_sweep_temp_files(self.folder))
