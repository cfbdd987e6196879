"""Scenario 5: the physical limit, raw SQLite counter-bump + insert transactions on this machine.

Each raw transaction is what a registration must do at the least: `BEGIN IMMEDIATE`, bump the
counter row, insert a version row of realistic size, `COMMIT`, on the same schema and pragmas as
the embedded store (WAL, synchronous=NORMAL). Between that and `register_model` sits one layer
worth isolating: the MetadataStore port (read the counter, then a conditional 3-row transaction).
All three run alternately, at 1 and at 32 writers.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import embedded
from bench.common import MODELREPO, RAW, Measured, alternate, ratio, row, run_concurrently
from bench.sizes import Sizes
from modelrepo import tables
from modelrepo.adapters.sqlite import SCHEMA, SqliteMetadataStore
from modelrepo.errors import ConditionFailed
from modelrepo.ports import Put

PARTITION = "exp~bench"
# About the size of a version row the core writes.
DOCUMENT = json.dumps({"model": {"description": None, "sha256": "0" * 64, "filler": "x" * 400}})


def _raw(path: Path, count: int, writers: int) -> Measured:
    connections: dict[int, sqlite3.Connection] = {}
    lock = threading.Lock()
    numbers = itertools.count(1)

    def connection() -> sqlite3.Connection:
        ident = threading.get_ident()
        if ident not in connections:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            connections[ident] = db
        return connections[ident]

    def bump_and_insert(_: int) -> None:
        db = connection()
        with lock:
            number = next(numbers)
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE items SET doc = json_set(doc, '$.latest', json_extract(doc, '$.latest') + 1), etag = ? "
            "WHERE pk = ? AND rk = 'counter'",
            (os.urandom(8).hex(), PARTITION),
        )
        db.execute(
            "INSERT INTO items (pk, rk, etag, doc) VALUES (?, ?, ?, ?)",
            (PARTITION, f"ver~{number:010d}", os.urandom(8).hex(), DOCUMENT),
        )
        db.execute("COMMIT")

    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    for statement in SCHEMA:
        setup.execute(statement)
    setup.execute("INSERT INTO items VALUES (?, 'counter', 'e', ?)", (PARTITION, json.dumps({"latest": 0})))
    setup.close()
    measured = run_concurrently(bump_and_insert, count, writers)
    check = sqlite3.connect(path)
    latest = json.loads(check.execute("SELECT doc FROM items WHERE rk = 'counter'").fetchone()[0])["latest"]
    rows = check.execute("SELECT count(*) FROM items WHERE rk LIKE 'ver~%'").fetchone()[0]
    check.close()
    for db in connections.values():
        db.close()
    if measured.failures == 0 and (latest, rows) != (count, count):
        raise AssertionError(f"raw SQLite: counter {latest}, {rows} rows, expected {count}")
    return measured


def _port(path: Path, count: int, writers: int) -> Measured:
    """The port's optimistic bump without the service around it: read, conditional write, retry."""
    store = SqliteMetadataStore(path)

    def bump(_: int) -> None:
        while True:
            counter = store.get(PARTITION, tables.COUNTER_ROW)
            version = (counter.data["latest"] if counter else 0) + 1
            guard = (
                Put(PARTITION, tables.COUNTER_ROW, {"latest": version}, if_match=counter.etag)
                if counter
                else Put(PARTITION, tables.COUNTER_ROW, {"latest": version}, if_absent=True)
            )
            try:
                store.transact(
                    [
                        guard,
                        Put(PARTITION, tables.version_row(version), json.loads(DOCUMENT), if_absent=True),
                        Put(PARTITION, tables.event_row(version), {"action": "model.registered"}, if_absent=True),
                    ]
                )
                return
            except ConditionFailed:
                continue

    try:
        return run_concurrently(bump, count, writers)
    finally:
        store.close()


def _register(root: Path, count: int, writers: int) -> Measured:
    repo, _ = embedded.repository(root)
    try:
        artifact_id = embedded.seed_artifact(repo)
        return run_concurrently(
            lambda i: repo.register_model(embedded.EXPERIMENT, artifact_id, "bench"), count, writers
        )
    finally:
        repo.metadata.close()


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    layers: dict[str, tuple[str, Callable[[Path, int, int], Measured], int]] = {
        "raw SQLite bump + insert": (RAW, lambda p, n, w: _raw(p / "raw.sqlite3", n, w), sizes.sqlite_transactions),
        "MetadataStore port: get + conditional transact": (
            MODELREPO,
            lambda p, n, w: _port(p / "port.sqlite3", n, w),
            sizes.sqlite_transactions,
        ),
        "register_model (whole core)": (MODELREPO, _register, sizes.register_versions),
    }
    for writers in sizes.sqlite_writers:
        pooled = {layer: Measured() for layer in layers}
        for round_number, layer in alternate(sizes.rounds, list(layers)):
            folder = work / f"sqlite-{writers}-{round_number}-{list(layers).index(layer)}"
            folder.mkdir(parents=True)
            system, measure, count = layers[layer]
            pooled[layer].add(measure(folder, count, writers))
            shutil.rmtree(folder, ignore_errors=True)
        limit = pooled["raw SQLite bump + insert"].throughput
        for layer, (system, _, _) in layers.items():
            rows.append(
                row(
                    f"{layer}, {writers} writer{'s' if writers > 1 else ''}",
                    system,
                    pooled[layer],
                    writers=writers,
                    layer=layer,
                    of_limit=ratio(pooled[layer].throughput, limit),
                )
            )
    return {
        "title": "5. Physical limit: raw SQLite transactions on this machine",
        "unit": "transactions/s",
        "rounds": sizes.rounds,
        "rows": rows,
    }
