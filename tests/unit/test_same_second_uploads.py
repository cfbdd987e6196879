"""Two uploads of one key within the same second, reported without sequencers (Azure's blob
trigger, moto): the timestamps tie, so the version the store still holds decides which is newer.
They also tie when one time is known only to the second (a listing's Last-Modified, as the
reconcile sweep sees it) and the other to the millisecond (an event's time)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

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


def test_a_listing_known_to_the_second_and_an_event_known_to_the_millisecond_tie() -> None:
    store = MemoryArtifactStore()
    repository = ModelRepository(store, MemoryMetadataStore())
    info = store.put(KEY, io.BytesIO(b"first"))
    first = ObjectCreated(key=KEY, etag=info.etag, size=info.size, uploaded_at=SECOND + timedelta(milliseconds=300))
    assert repository.record_artifact(first).outcome is Outcome.RECORDED
    listed = event_for(store, b"second")  # uploaded 400 ms later; its listing says SECOND
    assert repository.record_artifact(listed).outcome is Outcome.RECORDED
    assert repository.record_artifact(first).outcome is Outcome.DUPLICATE  # a late redelivery
    [current] = repository.list_run_artifacts("run1")
    assert current.etag == listed.etag


def test_times_of_the_same_second_with_fractions_still_order_uploads() -> None:
    """Both times known to the millisecond: they decide, even when a third upload replaced both."""
    store = MemoryArtifactStore()
    repository = ModelRepository(store, MemoryMetadataStore())
    early = store.put(KEY, io.BytesIO(b"early"))
    late = store.put(KEY, io.BytesIO(b"late"))
    store.put(KEY, io.BytesIO(b"third"))
    at = SECOND + timedelta(milliseconds=100)
    events = [
        ObjectCreated(key=KEY, etag=early.etag, size=early.size, uploaded_at=at, sha256="0" * 64),
        ObjectCreated(
            key=KEY, etag=late.etag, size=late.size, uploaded_at=at + timedelta(milliseconds=500), sha256="1" * 64
        ),
    ]
    assert [repository.record_artifact(e).outcome for e in events] == [Outcome.RECORDED, Outcome.RECORDED]
    [current] = repository.list_run_artifacts("run1")
    assert current.etag == late.etag
