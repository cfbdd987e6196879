"""SqliteMetadataStore: the embedded MetadataStore, one WAL-mode SQLite file."""

from __future__ import annotations

import json
import os
import queue
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from modelrepo.errors import ConditionFailed, Throttled
from modelrepo.ports import Delete, Item, MetadataStore, Write, check_transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk   TEXT NOT NULL,
    rk   TEXT NOT NULL,
    etag TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (pk, rk)
) WITHOUT ROWID
"""


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
        self._busy_timeout_ms = busy_timeout_ms
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = self._connect()
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        self._idle.put(db)

    def get(self, partition: str, row: str) -> Item | None:
        with self._connection() as db:
            found = db.execute("SELECT etag, doc FROM items WHERE pk = ? AND rk = ?", (partition, row)).fetchone()
        return None if found is None else Item(partition, row, json.loads(found[1]), found[0])

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
        return [Item(partition, rk, json.loads(doc), etag) for rk, etag, doc in rows]

    def transact(self, writes: Sequence[Write]) -> None:
        partition = check_transaction(writes)
        documents = {w.row: json.dumps(w.data) for w in writes if not isinstance(w, Delete)}
        with self._connection() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise Throttled(f"the metadata database is busy: {error}") from None
            try:
                for w in writes:
                    self._apply(db, partition, w, documents)
                db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                db.rollback()
                raise Throttled(f"the metadata database is busy: {error}") from None
            except ConditionFailed:
                db.rollback()
                raise

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
        elif w.if_absent:
            try:
                db.execute(
                    "INSERT INTO items (pk, rk, etag, doc) VALUES (?, ?, ?, ?)",
                    (partition, w.row, etag, documents[w.row]),
                )
            except sqlite3.IntegrityError:
                raise ConditionFailed(f"row {w.row!r} already exists") from None
        else:
            db.execute(
                "INSERT OR REPLACE INTO items (pk, rk, etag, doc) VALUES (?, ?, ?, ?)",
                (partition, w.row, etag, documents[w.row]),
            )

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
