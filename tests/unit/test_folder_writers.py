"""Whether a file is still open for writing, asked of the kernel (a read lease); and what the store
does where that cannot be asked (no leases on this system, or refused on this file system)."""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelrepo.adapters.folder import FolderArtifactStore, StillWriting
from modelrepo.ports import ObjectInfo

KEY = "exp1/run1/model.bin"


@pytest.fixture
def store(tmp_path: Path) -> FolderArtifactStore:
    return FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")


@pytest.fixture
def path(store: FolderArtifactStore) -> Path:
    target = store.uploads / KEY
    target.parent.mkdir(parents=True)
    return target


def test_a_file_open_for_writing_is_still_being_written_until_closed(store: FolderArtifactStore, path: Path) -> None:
    with path.open("wb") as writer:
        writer.write(b"half")
        writer.flush()
        assert store.examine(KEY) == StillWriting(KEY)
        assert store.list().objects == []  # a sweep does not see it either
    found = store.examine(KEY)
    assert isinstance(found, ObjectInfo) and found.size == 4
    assert [o.key for o in store.list().objects] == [KEY]


def test_a_writable_shared_mapping_counts_as_a_writer(store: FolderArtifactStore, path: Path) -> None:
    path.write_bytes(b"\0" * 4096)
    with path.open("r+b") as handle, mmap.mmap(handle.fileno(), 4096, access=mmap.ACCESS_WRITE):
        handle.close()  # only the mapping is left
        assert store.examine(KEY) == StillWriting(KEY)
    assert isinstance(store.examine(KEY), ObjectInfo)


def refuse_leases(monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    real: Callable[..., Any] = fcntl.fcntl

    def fcntl_without_leases(fd: int, command: int, *args: Any) -> Any:
        if command == fcntl.F_SETLEASE:
            raise OSError(error, "refused by the file system")
        return real(fd, command, *args)

    monkeypatch.setattr(fcntl, "fcntl", fcntl_without_leases)


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EACCES])
def test_where_leases_are_refused_the_store_cannot_tell_and_says_so_once(
    store: FolderArtifactStore,
    path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    refusal: int,
) -> None:
    """EINVAL: a file system without leases (NFS, FUSE) or leases disabled; EACCES: another user's
    file without CAP_LEASE. The watcher's quiet periods decide then (see the watcher's tests)."""
    refuse_leases(monkeypatch, refusal)
    with caplog.at_level(logging.WARNING, logger="modelrepo.adapters.folder"), path.open("wb") as writer:
        writer.write(b"half")
        writer.flush()
        assert isinstance(store.examine(KEY), ObjectInfo)  # cannot tell: not held back
        assert isinstance(store.examine(KEY), ObjectInfo)
    warnings = [r.getMessage() for r in caplog.records if "cannot tell whether files" in r.getMessage()]
    assert len(warnings) == 1 and str(store.uploads) in warnings[0]


def test_without_leases_on_this_system_the_store_cannot_tell_and_says_so_once(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(fcntl, "F_SETLEASE")  # as on macOS or the BSDs
    store = FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")
    with caplog.at_level(logging.WARNING, logger="modelrepo.adapters.folder"), path.open("wb") as writer:
        writer.write(b"half")
        writer.flush()
        assert isinstance(store.examine(KEY), ObjectInfo)
        assert isinstance(store.examine(KEY), ObjectInfo)
    assert sum("this system has no file leases" in r.getMessage() for r in caplog.records) == 1
