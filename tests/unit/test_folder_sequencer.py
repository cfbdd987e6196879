"""The folder store orders a path's versions by when they were seen, not by their file times.

`cp -p` of an older file, `mv` of a file prepared earlier and two extractions with one fixed mtime
all produce a newer version with an older or equal mtime; the last completed write must win.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from pathlib import Path

import pytest

from modelrepo.adapters.folder import LEDGER_NAME, FolderArtifactStore
from modelrepo.adapters.memory import MemoryMetadataStore
from modelrepo.events import ObjectCreated, happened_after
from modelrepo.ports import ObjectInfo
from modelrepo.service import ModelRepository, Outcome

KEY = "exp1/run1/model.bin"
HOUR_AGO_NS = 3600 * 10**9


def new_store(root: Path) -> FolderArtifactStore:
    return FolderArtifactStore(root / "artifacts", root / "registry")


def replace_with(store: FolderArtifactStore, key: str, data: bytes, mtime_ns: int) -> None:
    """`mv` of a file prepared elsewhere (same file system) with the given mtime, as `cp -p` leaves it."""
    staged = store.uploads.parent / "staging" / "next.bin"
    staged.parent.mkdir(exist_ok=True)
    staged.write_bytes(data)
    os.utime(staged, ns=(mtime_ns, mtime_ns))
    target = store.uploads / key
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


def head(store: FolderArtifactStore, key: str = KEY) -> ObjectInfo:
    info = store.head(key)
    assert info is not None and info.sequencer is not None
    return info


def newer(a: ObjectInfo, b: ObjectInfo) -> bool:
    return happened_after(a.sequencer, a.modified_at, b.sequencer, b.modified_at)


@pytest.mark.parametrize("older_by_ns", [HOUR_AGO_NS, 0], ids=["older-mtime", "equal-mtime"])
def test_a_replacement_with_an_older_or_equal_mtime_is_newer(tmp_path: Path, older_by_ns: int) -> None:
    store = new_store(tmp_path)
    first = store.put(KEY, io.BytesIO(b"first"))
    first_mtime = os.stat(store.uploads / KEY).st_mtime_ns
    replace_with(store, KEY, b"second", first_mtime - older_by_ns)
    second = head(store)
    assert second.etag == hashlib.sha256(b"second").hexdigest()
    assert newer(second, first)


def test_an_unchanged_file_keeps_its_sequencer_across_looks_and_restarts(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.put(KEY, io.BytesIO(b"weights"))
    seen = head(store).sequencer
    assert head(store).sequencer == seen
    assert [o.sequencer for o in store.list().objects] == [seen]
    store.close()

    again = new_store(tmp_path)  # a restart: the ledger remembers what was seen
    assert head(again).sequencer == seen
    replace_with(again, KEY, b"retrained", os.stat(again.uploads / KEY).st_mtime_ns - HOUR_AGO_NS)
    assert newer(head(again), ObjectInfo(KEY, 0, "", head(again).modified_at, sequencer=seen))


def test_a_lost_ledger_still_orders_later_writes_after_earlier_ones(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    first = store.put(KEY, io.BytesIO(b"first"))
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"{LEDGER_NAME}{suffix}").unlink(missing_ok=True)
    again = new_store(tmp_path)
    replace_with(again, KEY, b"second", os.stat(again.uploads / KEY).st_mtime_ns - HOUR_AGO_NS)
    assert newer(head(again), first)


def test_two_processes_on_one_root_share_one_order(tmp_path: Path) -> None:
    """Two stores on one root stand for `modelrepo serve` and a CLI `reconcile` running beside it."""
    serving, sweeping = new_store(tmp_path), new_store(tmp_path)
    seen: list[ObjectInfo] = []
    mtime = 1_000_000_000 * 10**9
    for n in range(6):
        replace_with(serving, KEY, f"version {n}".encode(), mtime)  # one fixed mtime, as reproducible builds
        seen.append(head(serving) if n % 2 else head(sweeping))
        assert head(sweeping).sequencer == head(serving).sequencer  # one version, one sequencer
    assert all(newer(later, earlier) for earlier, later in itertools.pairwise(seen))


def test_the_core_makes_the_last_written_bytes_current_whatever_their_mtime(tmp_path: Path) -> None:
    """Through the core: re-uploading older bytes (an older mtime, too) makes them current again."""
    store = new_store(tmp_path)
    repository = ModelRepository(store, MemoryMetadataStore())

    def record() -> str:
        result = repository.record_artifact(ObjectCreated.from_object(head(store), "test"))
        assert result.outcome in (Outcome.RECORDED, Outcome.DUPLICATE), result.outcome
        [current] = repository.list_run_artifacts("run1")
        return current.sha256

    store.put(KEY, io.BytesIO(b"old"))
    old_mtime = os.stat(store.uploads / KEY).st_mtime_ns
    assert record() == hashlib.sha256(b"old").hexdigest()
    replace_with(store, KEY, b"new", old_mtime - HOUR_AGO_NS)
    assert record() == hashlib.sha256(b"new").hexdigest()
    replace_with(store, KEY, b"old", old_mtime - 2 * HOUR_AGO_NS)
    assert record() == hashlib.sha256(b"old").hexdigest()
    [current] = repository.list_run_artifacts("run1")
    model = repository.register_model("exp1", current.run_artifact_id, "alice")
    with repository.open_model("exp1", model.version) as (_, stream):
        assert stream.read() == b"old"
