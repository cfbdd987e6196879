"""The embedded database's table layout: new databases key their rows by rowid with a unique index
on (partition, row); a database made before, with the WITHOUT ROWID table, opens and works as it
is, untouched, so an upgrade never has to rewrite a user's metadata."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.errors import ConditionFailed
from modelrepo.ports import Put

EARLIER_SCHEMA = """
CREATE TABLE items (
    pk   TEXT NOT NULL,
    rk   TEXT NOT NULL,
    etag TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (pk, rk)
) WITHOUT ROWID
"""


def layout(path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, sql FROM sqlite_master WHERE tbl_name = 'items' ORDER BY type").fetchall()
    finally:
        db.close()
    return [(kind, sql or "") for kind, sql in rows]


def test_a_new_database_keys_rows_by_rowid_with_a_unique_key(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    store = SqliteMetadataStore(path)
    store.close()
    found = layout(path)
    assert not any("WITHOUT ROWID" in sql for _, sql in found), found
    assert any(kind == "index" and "UNIQUE" in sql and "(pk, rk)" in sql for kind, sql in found), found


def test_a_database_with_the_earlier_layout_works_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(EARLIER_SCHEMA)
    db.execute("INSERT INTO items VALUES ('p', 'kept', 'e1', ?)", (json.dumps({"v": 1}),))
    db.commit()
    db.close()
    before = layout(path)

    store = SqliteMetadataStore(path)
    try:
        kept = store.get("p", "kept")
        assert kept is not None and kept.data == {"v": 1}
        store.transact([Put("p", "kept", {"v": 2}, if_match=kept.etag), Put("p", "new", {"v": 1}, if_absent=True)])
        with pytest.raises(ConditionFailed):
            store.transact([Put("p", "other", {}, if_absent=True), Put("p", "new", {}, if_absent=True)])
        assert [(item.row, item.data) for item in store.query("p", "")] == [("kept", {"v": 2}), ("new", {"v": 1})]
    finally:
        store.close()
    assert layout(path) == before  # no second index beside the primary key, nothing rewritten
