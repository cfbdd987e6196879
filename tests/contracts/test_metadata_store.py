"""The MetadataStore contract: every implementation must pass all of it."""

from __future__ import annotations

import threading

import pytest

from modelrepo.errors import ConditionFailed
from modelrepo.ports import MAX_WRITES_PER_TRANSACTION, Delete, MetadataStore, Put

P = "exp~contract"


def test_missing_row_reads_as_none(metadata_store: MetadataStore) -> None:
    assert metadata_store.get(P, "nothing") is None


def test_put_then_get_round_trips_documents(metadata_store: MetadataStore) -> None:
    document = {
        "text": "naïve 模型 🚀 # ? / \\ + %2B",
        "number": 9_999_999_999,
        "negative": -3,
        "ratio": 0.25,
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, "two", {"three": 3}], "empty": {}},
        "big": "x" * 20_000,
    }
    metadata_store.transact([Put(P, "row", document, if_absent=True)])
    item = metadata_store.get(P, "row")
    assert item is not None
    assert dict(item.data) == document
    assert (item.partition, item.row) == (P, "row")
    assert item.etag


def test_if_absent_refuses_an_existing_row(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    with pytest.raises(ConditionFailed):
        metadata_store.transact([Put(P, "row", {"v": 2}, if_absent=True)])
    item = metadata_store.get(P, "row")
    assert item is not None and item.data == {"v": 1}


def test_if_match_replaces_only_the_version_read(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    first = metadata_store.get(P, "row")
    assert first is not None
    metadata_store.transact([Put(P, "row", {"v": 2}, if_match=first.etag)])
    second = metadata_store.get(P, "row")
    assert second is not None and second.data == {"v": 2}
    assert second.etag != first.etag
    with pytest.raises(ConditionFailed):
        metadata_store.transact([Put(P, "row", {"v": 3}, if_match=first.etag)])
    third = metadata_store.get(P, "row")
    assert third is not None and third.data == {"v": 2}


def test_if_match_on_a_missing_row_fails(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "other", {"v": 1}, if_absent=True)])
    etag = metadata_store.get(P, "other").etag  # type: ignore[union-attr]
    with pytest.raises(ConditionFailed):
        metadata_store.transact([Put(P, "row", {"v": 1}, if_match=etag)])
    assert metadata_store.get(P, "row") is None


def test_etag_changes_even_when_the_document_does_not(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "row", {"v": 1}, if_absent=True)])
    first = metadata_store.get(P, "row")
    assert first is not None
    metadata_store.transact([Put(P, "row", {"v": 1}, if_match=first.etag)])
    second = metadata_store.get(P, "row")
    assert second is not None and second.etag != first.etag


def test_unconditional_put_upserts(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "row", {"v": 1})])
    metadata_store.transact([Put(P, "row", {"v": 2})])
    assert metadata_store.get(P, "row").data == {"v": 2}  # type: ignore[union-attr]


def test_a_failed_condition_writes_nothing_at_all(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "counter", {"n": 1}, if_absent=True)])
    counter = metadata_store.get(P, "counter")
    assert counter is not None
    metadata_store.transact([Put(P, "counter", {"n": 2}, if_match=counter.etag)])
    with pytest.raises(ConditionFailed):
        metadata_store.transact(
            [
                Put(P, "new-a", {"x": 1}, if_absent=True),
                Put(P, "counter", {"n": 99}, if_match=counter.etag),  # stale
                Put(P, "new-b", {"x": 1}),
            ]
        )
    assert metadata_store.get(P, "new-a") is None
    assert metadata_store.get(P, "new-b") is None
    assert metadata_store.get(P, "counter").data == {"n": 2}  # type: ignore[union-attr]


def test_rows_created_together_are_refused_together(metadata_store: MetadataStore) -> None:
    """A run of rows that must not exist (a batch of versions and their events): one that exists,
    wherever it sits in the run, refuses the whole transaction and writes none of the others."""
    metadata_store.transact([Put(P, "taken", {"v": 1}, if_absent=True)])
    creates = [Put(P, f"new-{n}", {"n": n}, if_absent=True) for n in range(5)]
    with pytest.raises(ConditionFailed):
        metadata_store.transact([*creates[:3], Put(P, "taken", {"v": 2}, if_absent=True), *creates[3:]])
    assert metadata_store.query(P, "new-", limit=10) == []
    assert metadata_store.get(P, "taken").data == {"v": 1}  # type: ignore[union-attr]
    metadata_store.transact([Put(P, f"new-{n}", {"n": n}, if_absent=True) for n in range(MAX_WRITES_PER_TRANSACTION)])
    assert len(metadata_store.query(P, "new-", limit=200)) == MAX_WRITES_PER_TRANSACTION


def test_delete_unconditional_and_conditional(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, "a", {"v": 1}), Put(P, "b", {"v": 1})])
    metadata_store.transact([Delete(P, "a")])
    assert metadata_store.get(P, "a") is None
    b = metadata_store.get(P, "b")
    assert b is not None
    metadata_store.transact([Put(P, "b", {"v": 2}, if_match=b.etag)])
    with pytest.raises(ConditionFailed):
        metadata_store.transact([Delete(P, "b", if_match=b.etag)])
    assert metadata_store.get(P, "b") is not None
    current = metadata_store.get(P, "b")
    assert current is not None
    metadata_store.transact([Delete(P, "b", if_match=current.etag)])
    assert metadata_store.get(P, "b") is None


def test_query_is_a_bounded_ascending_prefix_range(metadata_store: MetadataStore) -> None:
    rows = [f"ver~{n:04d}" for n in range(30)] + ["ver", "vera", "verz~1", "log~1", "ver~~"]
    for start in range(0, len(rows), 10):
        metadata_store.transact([Put(P, r, {"r": r}) for r in rows[start : start + 10]])
    metadata_store.transact([Put("exp~elsewhere", "ver~0001", {"r": "elsewhere"})])

    all_versions = metadata_store.query(P, "ver~", limit=100)
    assert [i.row for i in all_versions] == sorted([f"ver~{n:04d}" for n in range(30)] + ["ver~~"])
    assert all(i.partition == P and i.data == {"r": i.row} and i.etag for i in all_versions)

    first = metadata_store.query(P, "ver~", limit=7)
    assert [i.row for i in first] == [f"ver~{n:04d}" for n in range(7)]
    rest = metadata_store.query(P, "ver~", after=first[-1].row, limit=100)
    assert [i.row for i in rest] == [f"ver~{n:04d}" for n in range(7, 30)] + ["ver~~"]
    assert metadata_store.query(P, "ver~", after="ver~~", limit=5) == []
    assert metadata_store.query(P, "nothing~", limit=5) == []
    assert [i.row for i in metadata_store.query(P, "log~", limit=5)] == ["log~1"]


def test_transactions_are_confined_to_one_partition_and_distinct_rows(metadata_store: MetadataStore) -> None:
    with pytest.raises(ValueError):
        metadata_store.transact([Put(P, "a", {}), Put("exp~other", "a", {})])
    with pytest.raises(ValueError):
        metadata_store.transact([Put(P, "a", {}), Put(P, "a", {})])
    with pytest.raises(ValueError):
        metadata_store.transact([Put(P, f"r{n}", {}) for n in range(MAX_WRITES_PER_TRANSACTION + 1)])
    assert metadata_store.get(P, "a") is None


def test_a_full_size_transaction_commits(metadata_store: MetadataStore) -> None:
    metadata_store.transact([Put(P, f"r{n:02d}", {"n": n}) for n in range(MAX_WRITES_PER_TRANSACTION)])
    assert len(metadata_store.query(P, "r", limit=100)) == MAX_WRITES_PER_TRANSACTION


def test_concurrent_conditional_increments_lose_no_update(metadata_store: MetadataStore) -> None:
    """The primitive the version counter relies on: every committed bump is exactly +1."""
    metadata_store.transact([Put(P, "counter", {"n": 0}, if_absent=True)])
    per_thread, threads = 15, 6
    committed: list[int] = []
    lock = threading.Lock()

    def bump() -> None:
        done = 0
        while done < per_thread:
            item = metadata_store.get(P, "counter")
            assert item is not None
            n = item.data["n"] + 1
            try:
                metadata_store.transact(
                    [Put(P, "counter", {"n": n}, if_match=item.etag), Put(P, f"v~{n:05d}", {"n": n}, if_absent=True)]
                )
            except ConditionFailed:
                continue
            with lock:
                committed.append(n)
            done += 1

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = per_thread * threads
    assert sorted(committed) == list(range(1, total + 1))
    assert metadata_store.get(P, "counter").data == {"n": total}  # type: ignore[union-attr]
    assert len(metadata_store.query(P, "v~", limit=1000)) == total
