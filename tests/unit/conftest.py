"""Unit tests run the core on the in-memory fakes: no network, no disk, no cloud SDK."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.events import ObjectCreated
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository, RecordResult
from tests.fixtures.faults import FaultyMetadataStore, commit_then_lose_answer

__all__ = ["FaultyMetadataStore", "commit_then_lose_answer"]

FAST_RETRY = RetryPolicy(base_seconds=0.0005, cap_seconds=0.005, deadline_seconds=20)


@pytest.fixture
def artifacts() -> MemoryArtifactStore:
    return MemoryArtifactStore()


@pytest.fixture
def metadata() -> MemoryMetadataStore:
    return MemoryMetadataStore()


@pytest.fixture
def repo(artifacts: MemoryArtifactStore, metadata: MemoryMetadataStore) -> ModelRepository:
    return ModelRepository(artifacts, metadata, retry=FAST_RETRY)


def upload(repo: ModelRepository, key: str, data: bytes, *, sequencer: str | None = None) -> ObjectCreated:
    """Put bytes into the bucket and return the event the cloud would deliver for it."""
    info = repo.artifacts.put(key, io.BytesIO(data))
    return ObjectCreated(key, info.etag, info.size, info.modified_at, sequencer=sequencer, actor="test-upload")


def record(repo: ModelRepository, key: str, data: bytes, *, sequencer: str | None = None) -> RecordResult:
    return repo.record_artifact(upload(repo, key, data, sequencer=sequencer))


def event_at(key: str, etag: str, when: datetime, sequencer: str | None = None) -> ObjectCreated:
    return ObjectCreated(key, etag, 1, when, sequencer=sequencer)


EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def concurrently(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` on `count` threads released together; each result, or the exception raised."""
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results
