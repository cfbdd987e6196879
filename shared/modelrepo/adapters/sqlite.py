"""SqliteMetadataStore: the embedded MetadataStore, one WAL-mode SQLite file.

Every SQLite failure leaves this module as an error naming the database: busy or locked is
Throttled (retried), a full disk InsufficientStorage (answered 507), anything else (corrupt,
read-only, immutable, deleted, unreadable) StoreUnavailable (answered 503). Opening the store proves
it can be read and written, so a broken database stops `modelrepo serve` at start-up with one line.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pydantic_core import from_json, to_json

from modelrepo.errors import ConditionFailed, InsufficientStorage, StorageError, StoreUnavailable, Throttled
from modelrepo.ports import Delete, Item, MetadataStore, Put, Write, check_transaction

# A table keyed by rowid with a unique index on the key, not a WITHOUT ROWID table: rows hold JSON
# documents of a kilobyte or more (a version and its event), which SQLite stores and appends far
# more cheaply in a rowid table. Databases made with the earlier WITHOUT ROWID table keep it: both
# answer the same statements.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS items (pk TEXT NOT NULL, rk TEXT NOT NULL, etag TEXT NOT NULL, doc TEXT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS items_key ON items (pk, rk)",
)
# Written at every start: a database that cannot take a write is found then, not by a user's request.
PROBE = (
    "CREATE TABLE IF NOT EXISTS store_info (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "INSERT OR REPLACE INTO store_info (name, value) VALUES ('opened_at', ?)",
)


log = logging.getLogger(__name__)

# Commits between two checkpoints run in the background (a batch of registrations is one commit).
CHECKPOINT_EVERY = 64
# SQLite's own checkpoint, run by a committing thread, stays on as a backstop at this WAL size in
# pages, should the background fall behind.
BACKSTOP_PAGES = 16_384


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: unbounded)."""
    if not prefix:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class SqliteMetadataStore(MetadataStore):
    """Conditional writes are checked and applied inside one `BEGIN IMMEDIATE` transaction.

    Connections are pooled rather than kept per thread, because the local HTTP server runs each
    request on a fresh thread.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int = 10_000) -> None:
        self._path = path
        self._what = f"the metadata database {path}"
        self._busy_timeout_ms = busy_timeout_ms
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._identity: tuple[int, int] | None = None  # the file opened, once it is
        self._checkpoints = _Checkpointer(self._connect, self._what)
        # Writers of this process take turns here rather than at SQLite's write lock, whose busy
        # handler sleeps 1, 2, 5, 10 ms ... between tries: a writer that found the lock held
        # would sleep a millisecond or more for a transaction of tens of microseconds. Writers in
        # other processes still meet at SQLite's lock (busy_timeout).
        self._writer = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreUnavailable(f"{self._what} cannot be created: {error.strerror}") from None
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone() is None:
                for statement in SCHEMA:
                    db.execute(statement)
            db.execute(PROBE[0])
            db.execute(PROBE[1], (datetime.now(UTC).isoformat(),))
        self._identity = self._file_identity()

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self._path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def _failure(self, error: sqlite3.Error) -> StorageError:
        code = getattr(error, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return Throttled(f"the metadata database is busy: {error}")
        if primary == sqlite3.SQLITE_FULL:
            return InsufficientStorage(f"{self._what} is out of space (its disk is full): {error}")
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return StoreUnavailable(f"{self._what} is not a usable SQLite database ({error}); restore it from a backup")
        return StoreUnavailable(f"{self._what} cannot be used: {error}")

    def _connect(self) -> sqlite3.Connection:
        """A new connection. Only the first may create the file: once the store is open, a connection
        to a deleted database would silently start an empty one beside the registry's bytes."""
        if self._identity is not None:
            self._check_still_there()
        mode = "rwc" if self._identity is None else "rw"
        db = sqlite3.connect(
            f"file:{quote(os.fspath(self._path))}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            try:
                db = self._connect()
            except sqlite3.Error as error:
                raise self._failure(error) from None
        try:
            yield db
        except BaseException as error:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.rollback()
            if not isinstance(error, sqlite3.Error):
                if not db.in_transaction:
                    self._idle.put(db)  # a lost condition leaves the connection as good as before
                raise
            failure = self._failure(error)
            if isinstance(failure, Throttled):
                self._idle.put(db)
            else:
                db.close()  # a connection that failed this way is not handed out again
            raise failure from None
        self._idle.put(db)

    def _check_still_there(self) -> None:
        """Writes to a database file deleted or replaced behind our back would be lost at the next
        start; refuse them instead (one stat per transaction and per new connection)."""
        if self._file_identity() != self._identity:
            raise StoreUnavailable(
                f"{self._what} was deleted or replaced while in use; writes would be lost. "
                "Stop modelrepo, put the database back (or restore it), and start it again"
            )

    def get(self, partition: str, row: str) -> Item | None:
        with self._connection() as db:
            found = db.execute("SELECT etag, doc FROM items WHERE pk = ? AND rk = ?", (partition, row)).fetchone()
        return None if found is None else Item(partition, row, from_json(found[1]), found[0])

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        # One lower bound only: given both `rk >= prefix` and `rk > after`, SQLite seeks the index to
        # the prefix and filters every row up to `after`, so deep pages cost the partition's size.
        if after is not None and after >= prefix:
            sql = "SELECT rk, etag, doc FROM items WHERE pk = ? AND rk > ?"
            args: list[object] = [partition, after]
        else:
            sql = "SELECT rk, etag, doc FROM items WHERE pk = ? AND rk >= ?"
            args = [partition, prefix]
        end = _prefix_end(prefix)
        if end is not None:
            sql += " AND rk < ?"
            args.append(end)
        sql += " ORDER BY rk LIMIT ?"
        args.append(limit)
        with self._connection() as db:
            rows = db.execute(sql, args).fetchall()
        return [Item(partition, rk, from_json(doc), etag) for rk, etag, doc in rows]

    def transact(self, writes: Sequence[Write]) -> None:
        partition = check_transaction(writes)
        documents = {w.row: to_json(w.data).decode() for w in writes if not isinstance(w, Delete)}
        self._check_still_there()
        with self._writer, self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            created: list[Put] = []  # a run of rows that must not exist yet: one statement for all
            for w in writes:
                if isinstance(w, Put) and w.if_absent:
                    created.append(w)
                    continue
                self._create(db, partition, created, documents)
                created = []
                self._apply(db, partition, w, documents)
            self._create(db, partition, created, documents)
            db.execute("COMMIT")
        self._checkpoints.committed()

    @staticmethod
    def _create(db: sqlite3.Connection, partition: str, rows: list[Put], documents: dict[str, str]) -> None:
        """Insert rows that must not exist yet with one statement: a batch of registrations is
        then four statements, not two per version, and each statement lets go of the GIL and has
        to win it back from the threads queueing the next batch. If any row exists the statement
        changes nothing, and the first such row is named."""
        if not rows:
            return
        values: list[str] = []
        for w in rows:
            values += (partition, w.row, os.urandom(8).hex(), documents[w.row])
        try:
            db.execute(
                f"INSERT INTO items (pk, rk, etag, doc) VALUES {', '.join(['(?, ?, ?, ?)'] * len(rows))}", values
            )
        except sqlite3.IntegrityError:
            names = [w.row for w in rows]
            taken = {
                rk
                for (rk,) in db.execute(
                    f"SELECT rk FROM items WHERE pk = ? AND rk IN ({', '.join(['?'] * len(names))})",
                    [partition, *names],
                )
            }
            first = next((name for name in names if name in taken), names[0])
            raise ConditionFailed(f"row {first!r} already exists") from None

    @staticmethod
    def _apply(db: sqlite3.Connection, partition: str, w: Write, documents: dict[str, str]) -> None:
        """One statement per write that checks its condition as it writes; the caller rolls back."""
        if isinstance(w, Delete):
            if w.if_match is None:
                db.execute("DELETE FROM items WHERE pk = ? AND rk = ?", (partition, w.row))
            elif (
                db.execute(
                    "DELETE FROM items WHERE pk = ? AND rk = ? AND etag = ?", (partition, w.row, w.if_match)
                ).rowcount
                != 1
            ):
                raise ConditionFailed(f"row {w.row!r} changed")
            return
        etag = os.urandom(8).hex()
        if w.if_match is not None:
            updated = db.execute(
                "UPDATE items SET etag = ?, doc = ? WHERE pk = ? AND rk = ? AND etag = ?",
                (etag, documents[w.row], partition, w.row, w.if_match),
            )
            if updated.rowcount != 1:
                raise ConditionFailed(f"row {w.row!r} changed")
        else:
            db.execute(
                "INSERT OR REPLACE INTO items (pk, rk, etag, doc) VALUES (?, ?, ?, ?)",
                (partition, w.row, etag, documents[w.row]),
            )

    @staticmethod
    def integrity(path: Path) -> list[str]:
        """The problems `PRAGMA integrity_check` finds in a database file, read-only (empty: sound)."""
        if not path.is_file():
            return [f"{path} is missing"]
        try:
            db = sqlite3.connect(f"file:{quote(os.fspath(path))}?mode=ro", uri=True)
        except sqlite3.Error as error:
            return [f"cannot be opened: {error}"]
        try:
            rows = [str(row[0]) for row in db.execute("PRAGMA integrity_check")]
        except sqlite3.Error as error:
            return [f"cannot be checked: {error}"]
        finally:
            db.close()
        return [] if rows == ["ok"] else rows

    def close(self) -> None:
        self._checkpoints.close()
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class _Checkpointer:
    """Copies the WAL back into the database file in a thread of its own, every CHECKPOINT_EVERY
    commits. SQLite's automatic checkpoint runs inside the commit that crosses its threshold, and
    with synchronous=NORMAL a checkpoint is where the disk is synced: that one commit, and every
    registration queued behind it, would wait for the sync. A PASSIVE checkpoint never blocks a
    writer or a reader; what it cannot copy yet, the next one does."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], what: str) -> None:
        self._connect = connect
        self._what = what
        self._commits = 0  # counted without a lock: a lost increment only delays a checkpoint
        self._wake = threading.Event()
        self._due = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY:
            return
        with self._guard:
            if self._closing:
                return
            if self._thread is None:  # started on first need: a short CLI command never starts it
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()
        self._due = True
        self._wake.set()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        failing = False
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._due:  # also when closing: a checkpoint asked for is run before the thread ends
                self._due = False
                try:
                    db = db or self._connect()
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except (sqlite3.Error, StorageError) as error:
                    if not failing:  # once per spell of failures; commits report their own errors
                        log.warning("checkpointing %s failed (retried after the next commits): %s", self._what, error)
                    failing = True
                    if db is not None:
                        db.close()
                        db = None
            if self._closing:
                break
        if db is not None:
            db.close()

    def close(self) -> None:
        with self._guard:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()
