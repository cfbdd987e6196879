"""The ArtifactStore contract: every implementation must pass all of it."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from modelrepo.errors import ObjectChanged, ObjectMissing
from modelrepo.ports import ArtifactStore

KEY = "exp1/run1/model.bin"


def read_version(store: ArtifactStore, key: str, etag: str) -> bytes:
    with store.open(key, etag=etag) as stream:
        return b"".join(iter(lambda: stream.read(65536), b""))


def read_pinned(store: ArtifactStore, digest: str) -> bytes:
    with store.open_pinned(digest) as stream:
        return stream.read()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_then_head_describes_the_object(artifact_store: ArtifactStore) -> None:
    assert artifact_store.head(KEY) is None
    info = artifact_store.put(KEY, io.BytesIO(b"weights"))
    assert (info.key, info.size) == (KEY, 7)
    assert info.etag
    head = artifact_store.head(KEY)
    assert head is not None
    assert (head.key, head.size, head.etag) == (KEY, 7, info.etag)
    assert head.modified_at.tzinfo is not None


def test_open_reads_exactly_the_version_asked_for(artifact_store: ArtifactStore) -> None:
    first = artifact_store.put(KEY, io.BytesIO(b"version one"))
    assert read_version(artifact_store, KEY, first.etag) == b"version one"
    second = artifact_store.put(KEY, io.BytesIO(b"version two!"))
    assert second.etag != first.etag
    with pytest.raises(ObjectChanged):
        read_version(artifact_store, KEY, first.etag)
    assert read_version(artifact_store, KEY, second.etag) == b"version two!"


def test_open_of_a_missing_object_says_so(artifact_store: ArtifactStore) -> None:
    with pytest.raises(ObjectMissing):
        read_version(artifact_store, "exp1/run1/absent.bin", "whatever")
    info = artifact_store.put(KEY, io.BytesIO(b"x"))
    artifact_store.delete(KEY)
    with pytest.raises(ObjectMissing):
        read_version(artifact_store, KEY, info.etag)
    assert artifact_store.head(KEY) is None
    artifact_store.delete(KEY)  # deleting again is fine


def test_large_objects_stream_intact(artifact_store: ArtifactStore) -> None:
    data = os.urandom(9 * 1024 * 1024 + 17)
    seen: list[int] = []
    info = artifact_store.put(KEY, io.BytesIO(data), progress=seen.append)
    assert info.size == len(data)
    assert sum(seen) == len(data)
    assert sha(read_version(artifact_store, KEY, info.etag)) == sha(data)


@pytest.mark.parametrize(
    "name",
    [
        "with space.bin",
        "plus+sign.bin",
        "percent%2Bplus.bin",
        "模型/ñame.onnx",
        "hash#and?query.pt",
        "deep/er/nest.bin",
    ],
)
def test_awkward_keys_round_trip(artifact_store: ArtifactStore, name: str) -> None:
    key = f"exp1/run1/{name}"
    info = artifact_store.put(key, io.BytesIO(name.encode()))
    assert artifact_store.head(key) is not None
    assert read_version(artifact_store, key, info.etag) == name.encode()
    listed = artifact_store.list("exp1/run1/").objects
    assert [o.key for o in listed] == [key]


def test_listing_pages_in_key_order(artifact_store: ArtifactStore) -> None:
    keys = [f"exp1/run{r}/m{n}.bin" for r in (1, 2) for n in range(5)]
    for key in keys:
        artifact_store.put(key, io.BytesIO(key.encode()))
    artifact_store.put("other/run1/m.bin", io.BytesIO(b"x"))
    seen: list[str] = []
    after = None
    while True:
        page = artifact_store.list("exp1/", after=after, limit=3)
        assert len(page.objects) <= 3
        seen.extend(o.key for o in page.objects)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == sorted(keys)
    assert all(o.size == len(o.key) for o in artifact_store.list("exp1/run2/").objects)


def test_listing_put_and_head_name_a_version_by_the_same_etag(artifact_store: ArtifactStore) -> None:
    """The ETag is part of an artifact's identity: a sweep that lists must see the very ETag that
    the upload's event carried, or it records the same upload a second time."""
    info = artifact_store.put(KEY, io.BytesIO(b"weights"))
    head = artifact_store.head(KEY)
    [listed] = artifact_store.list("exp1/").objects
    assert head is not None and info.etag == head.etag == listed.etag
    assert (listed.key, listed.size) == (KEY, 7)
    assert read_version(artifact_store, KEY, listed.etag) == b"weights"


def test_pinned_bytes_survive_overwrite_and_delete(artifact_store: ArtifactStore) -> None:
    original = b"registered weights"
    info = artifact_store.put(KEY, io.BytesIO(original))
    digest = sha(original)
    assert not artifact_store.has_pinned(digest)
    artifact_store.pin(KEY, etag=info.etag, digest=digest)
    assert artifact_store.has_pinned(digest)
    artifact_store.pin(KEY, etag=info.etag, digest=digest)  # idempotent
    artifact_store.put(KEY, io.BytesIO(b"something else entirely"))
    assert read_pinned(artifact_store, digest) == original
    artifact_store.delete(KEY)
    assert read_pinned(artifact_store, digest) == original


def test_pin_refuses_a_replaced_or_missing_version(artifact_store: ArtifactStore) -> None:
    old = artifact_store.put(KEY, io.BytesIO(b"old"))
    artifact_store.put(KEY, io.BytesIO(b"new bytes"))
    with pytest.raises(ObjectChanged):
        artifact_store.pin(KEY, etag=old.etag, digest=sha(b"old"))
    assert not artifact_store.has_pinned(sha(b"old"))
    with pytest.raises(ObjectMissing):
        artifact_store.pin("exp1/run1/absent.bin", etag=old.etag, digest=sha(b"old"))


def test_discarded_pins_are_gone(artifact_store: ArtifactStore) -> None:
    info = artifact_store.put(KEY, io.BytesIO(b"bytes"))
    artifact_store.pin(KEY, etag=info.etag, digest=sha(b"bytes"))
    artifact_store.discard_pinned(sha(b"bytes"))
    assert not artifact_store.has_pinned(sha(b"bytes"))
    with pytest.raises(ObjectMissing):
        read_pinned(artifact_store, sha(b"bytes"))
