"""Two uploads of one key within the same second, reported without sequencers (Azure's blob
trigger, moto): the timestamps tie, so the version the store still holds decides which is newer."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.events import ObjectCreated
from modelrepo.service import ModelRepository, Outcome

KEY = "exp1/run1/model.bin"
SECOND = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def event_for(store: MemoryArtifactStore, data: bytes) -> ObjectCreated:
    info = store.put(KEY, io.BytesIO(data))
    return ObjectCreated(key=KEY, etag=info.etag, size=info.size, uploaded_at=SECOND)


def test_the_newer_upload_of_the_same_second_becomes_current() -> None:
    store = MemoryArtifactStore()
    repository = ModelRepository(store, MemoryMetadataStore())
    assert repository.record_artifact(event_for(store, b"first")).outcome is Outcome.RECORDED
    second = event_for(store, b"second")
    assert repository.record_artifact(second).outcome is Outcome.RECORDED
    [current] = repository.list_run_artifacts("run1")
    assert current.etag == second.etag


def test_a_late_event_for_the_replaced_upload_is_stale() -> None:
    store = MemoryArtifactStore()
    repository = ModelRepository(store, MemoryMetadataStore())
    info = store.put(KEY, io.BytesIO(b"first"))
    first = ObjectCreated(key=KEY, etag=info.etag, size=info.size, uploaded_at=SECOND, sha256="0" * 64)
    second = event_for(store, b"second")
    assert repository.record_artifact(second).outcome is Outcome.RECORDED
    assert repository.record_artifact(first).outcome is Outcome.STALE
    [current] = repository.list_run_artifacts("run1")
    assert current.etag == second.etag
