"""The folder store proves large reads (verified on a helper thread) as strictly as small ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.errors import ObjectChanged
from modelrepo.ports import iter_chunks

SIZE = 20 << 20  # past the point where verification moves to the helper thread


@pytest.fixture
def store(tmp_path: Path) -> FolderArtifactStore:
    return FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")


def _upload(store: FolderArtifactStore) -> tuple[str, bytes]:
    data = os.urandom(SIZE)
    path = store.path_of("exp/run/big.bin")
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return "exp/run/big.bin", data


def test_a_large_read_of_the_right_version_streams_every_byte(store: FolderArtifactStore) -> None:
    key, data = _upload(store)
    digest = hashlib.sha256()
    with store.open(key, etag=hashlib.sha256(data).hexdigest()) as stream:
        for chunk in iter_chunks(stream):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha256(data).digest()


def test_a_large_read_of_another_version_fails_at_the_end(store: FolderArtifactStore) -> None:
    key, _ = _upload(store)
    with pytest.raises(ObjectChanged), store.open(key, etag="0" * 64) as stream:
        for _ in iter_chunks(stream):
            pass


def test_a_large_file_rewritten_while_it_is_read_fails(store: FolderArtifactStore) -> None:
    key, data = _upload(store)
    with pytest.raises(ObjectChanged), store.open(key, etag=hashlib.sha256(data).hexdigest()) as stream:
        stream.read(12 << 20)
        with store.path_of(key).open("r+b") as writer:  # in place, past what was read
            writer.seek(16 << 20)
            writer.write(b"changed")
        for _ in iter_chunks(stream):
            pass


def test_stopping_a_large_read_early_releases_it(store: FolderArtifactStore) -> None:
    key, data = _upload(store)
    with store.open(key, etag=hashlib.sha256(data).hexdigest()) as stream:
        stream.read(10 << 20)
        stream.read(1 << 20)
    digest = hashlib.sha256(data).hexdigest()
    store.pin(key, etag=digest, digest=digest)  # the file is not held by the abandoned read
    assert store.has_pinned(digest)
