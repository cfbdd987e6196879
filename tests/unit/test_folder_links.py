"""The folder store reads nothing outside its root: links and other non-regular files are refused.

Every read (head, open, list, pin, open_pinned) walks the path one folder at a time with
O_NOFOLLOW; the drop folder's refusals carry a reason and never a digest of what a link points at.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from pathlib import Path

import pytest

from modelrepo.adapters.folder import FolderArtifactStore, Refused
from modelrepo.errors import InvalidInput, ObjectMissing
from modelrepo.ports import ObjectInfo

SECRET = b"MODELREPO_API_KEY=outside-the-root\n"


@pytest.fixture
def store(tmp_path: Path) -> FolderArtifactStore:
    return FolderArtifactStore(tmp_path / "root" / "artifacts", tmp_path / "root" / "registry")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    return secret


def plant(store: FolderArtifactStore, key: str) -> Path:
    path = store.uploads / key
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read(store: FolderArtifactStore, key: str, etag: str) -> bytes:
    with store.open(key, etag=etag) as stream:
        return stream.read()


def assert_refused(store: FolderArtifactStore, key: str, words: str) -> Refused:
    found = store.examine(key)
    assert isinstance(found, Refused), found
    assert words in found.reason
    assert store.head(key) is None
    with pytest.raises(ObjectMissing):
        read(store, key, hashlib.sha256(SECRET).hexdigest())
    assert key not in [o.key for o in store.list().objects]
    return found


def test_a_symlink_to_a_file_outside_the_root_is_refused_unread(store: FolderArtifactStore, outside: Path) -> None:
    plant(store, "exp1/run1/model.bin").symlink_to(outside)
    refused = assert_refused(store, "exp1/run1/model.bin", "symbolic link")
    assert hashlib.sha256(SECRET).hexdigest() not in refused.etag  # nothing about the target is published
    assert refused.size == 0


def test_a_symlink_to_proc_self_environ_is_refused(store: FolderArtifactStore) -> None:
    """The hostile tester's case: recorded with size 0 and the environment's digest before."""
    plant(store, "exp1/run1/environ").symlink_to("/proc/self/environ")
    assert_refused(store, "exp1/run1/environ", "symbolic link")


def test_a_symlinked_folder_is_neither_read_nor_written_through(store: FolderArtifactStore, outside: Path) -> None:
    (outside.parent / "run1").mkdir()
    (outside.parent / "run1" / "model.bin").write_bytes(SECRET)
    store.uploads.joinpath("exp1").symlink_to(outside.parent, target_is_directory=True)
    refused = assert_refused(store, "exp1/run1/model.bin", "symbolic link")
    assert "'exp1'" in refused.reason
    with pytest.raises(InvalidInput, match="symbolic link"):
        store.put("exp1/run1/new.bin", io.BytesIO(b"would land outside"))
    store.delete("exp1/run1/model.bin")
    assert not (outside.parent / "run1" / "new.bin").exists()
    assert (outside.parent / "run1" / "model.bin").read_bytes() == SECRET


def test_a_fifo_is_refused_without_blocking(store: FolderArtifactStore) -> None:
    os.mkfifo(plant(store, "exp1/run1/pipe"))
    done = threading.Event()

    def look() -> None:
        assert_refused(store, "exp1/run1/pipe", "FIFO")
        done.set()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    looker.join(timeout=60)  # a store that opened the FIFO for reading would wait for a writer forever
    assert done.is_set()


def test_a_device_file_is_refused(store: FolderArtifactStore) -> None:
    os.mknod(plant(store, "exp1/run1/null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert_refused(store, "exp1/run1/null", "device file")


def test_a_hard_link_is_refused(store: FolderArtifactStore, outside: Path, tmp_path: Path) -> None:
    """A second name of a file may lie outside the root (same file system), unseen by the server."""
    os.link(outside, plant(store, "exp1/run1/linked.bin"))
    refused = assert_refused(store, "exp1/run1/linked.bin", "2 hard links")
    assert "copy the file in" in refused.reason


def test_a_regular_file_is_described_by_exactly_the_bytes_read(store: FolderArtifactStore) -> None:
    plant(store, "exp1/run1/model.bin").write_bytes(b"weights" * 1000)
    found = store.examine("exp1/run1/model.bin")
    assert isinstance(found, ObjectInfo)
    assert (found.size, found.sha256) == (7000, hashlib.sha256(b"weights" * 1000).hexdigest())
    assert read(store, "exp1/run1/model.bin", found.etag) == b"weights" * 1000


def test_pinning_and_serving_follow_no_link_in_the_registry(store: FolderArtifactStore, outside: Path) -> None:
    info = store.put("exp1/run1/model.bin", io.BytesIO(b"registered"))
    digest = hashlib.sha256(b"registered").hexdigest()
    store.pin("exp1/run1/model.bin", etag=info.etag, digest=digest)
    pinned = store.registry / "sha256" / digest[:2] / digest
    pinned.unlink()
    pinned.symlink_to(outside)  # planted in place of the pinned bytes
    assert not store.has_pinned(digest)
    with pytest.raises(ObjectMissing), store.open_pinned(digest):
        pass
    store.pin("exp1/run1/model.bin", etag=info.etag, digest=digest)  # pinning again replaces the link
    assert not pinned.is_symlink()
    with store.open_pinned(digest) as stream:
        assert stream.read() == b"registered"
    assert outside.read_bytes() == SECRET


def test_a_symlink_swapped_in_after_recording_is_not_pinned(store: FolderArtifactStore, outside: Path) -> None:
    info = store.put("exp1/run1/model.bin", io.BytesIO(SECRET))
    path = store.uploads / "exp1/run1/model.bin"
    path.unlink()
    path.symlink_to(outside)  # the same bytes, reached through a link
    with pytest.raises(ObjectMissing):
        store.pin("exp1/run1/model.bin", etag=info.etag, digest=info.etag)
    assert not store.has_pinned(info.etag)


def test_an_object_and_a_folder_of_the_same_name_are_a_clear_refusal(store: FolderArtifactStore) -> None:
    """S3 and Blob Storage hold `run1/b` and `run1/b/c` side by side; a file system cannot. Either
    order is the caller's mistake, answered as one (400), never as a broken store (503)."""
    store.put("exp1/run1/b/c", io.BytesIO(b"inside"))
    with pytest.raises(InvalidInput, match="is a folder of other objects"):
        store.put("exp1/run1/b", io.BytesIO(b"over the folder"))
    store.put("exp1/run1/d", io.BytesIO(b"an object"))
    with pytest.raises(InvalidInput, match="is an object already"):
        store.put("exp1/run1/d/e", io.BytesIO(b"under the object"))
    assert sorted(o.key for o in store.list("exp1/run1/").objects) == ["exp1/run1/b/c", "exp1/run1/d"]
