"""How the embedded database's writers and checkpoints stay out of each other's way.

Checkpoints run beside the commits, not inside them: with synchronous=NORMAL a checkpoint is where
SQLite syncs the disk, and a commit that ran it would hold up every registration queued behind it
(bench: register at 32 writers, p99). Writers of one process queue in the store, not in SQLite's
busy handler, which sleeps between tries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelrepo.adapters import sqlite
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.ports import Put

PAGE = 4096
DOCUMENT = {"weights": "x" * (2 * PAGE)}  # about three pages per commit


def commit(store: SqliteMetadataStore, count: int) -> None:
    for n in range(count):
        store.transact([Put("p", f"row-{n:05d}", DOCUMENT, if_absent=True)])


def test_commits_leave_checkpoints_to_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~1,500 pages of commits, past SQLite's default threshold of 1,000, with the background
    checkpointer held back: no commit copied the WAL into the database file itself."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_EVERY", 1_000_000)
    path = tmp_path / "metadata.db"
    store = SqliteMetadataStore(path)
    try:
        before = path.stat().st_size
        commit(store, 500)
        assert path.stat().st_size == before, "a commit ran a checkpoint"
        assert Path(f"{path}-wal").stat().st_size > 1000 * PAGE
    finally:
        store.close()


def test_the_background_checkpoints_every_so_many_commits(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    store = SqliteMetadataStore(path)
    try:
        before = path.stat().st_size
        commit(store, sqlite.CHECKPOINT_EVERY)
        store._checkpoints.close()  # waits for the checkpoint the last commit asked for
        assert path.stat().st_size >= before + sqlite.CHECKPOINT_EVERY * len(DOCUMENT["weights"])
        assert [item.row for item in store.query("p", "row-", limit=1)] == ["row-00000"]
    finally:
        store.close()


def test_writers_of_one_process_take_turns_without_sqlites_busy_handler(tmp_path: Path) -> None:
    """With no busy timeout at all, 8 threads writing at once never meet SQLite's write lock held:
    they queue in the store, not in SQLite's busy handler (which sleeps a millisecond or more per
    try). Writers in other processes still meet there (tests/bench: racing writers)."""
    store = SqliteMetadataStore(tmp_path / "metadata.db", busy_timeout_ms=0)
    failures: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for n in range(100):
                store.transact([Put("p", f"t{thread}-{n:03d}", DOCUMENT, if_absent=True)])
        except BaseException as error:
            failures.append(error)

    try:
        threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert len(store.query("p", "t", limit=1000)) == 800
    finally:
        store.close()
