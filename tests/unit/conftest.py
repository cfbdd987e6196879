"""Unit tests run the core on the in-memory fakes: no network, no disk, no cloud SDK."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.errors import OutcomeUnknown
from modelrepo.events import ObjectCreated
from modelrepo.ports import Item, MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository, RecordResult

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


@dataclass
class FaultyMetadataStore(MetadataStore):
    """A real in-memory store with faults injected at the boundary a cloud SDK would fail at.

    `fault(writes, inner)` is consulted on every transact; it may raise before or after letting the
    write through, exactly as a lost response or a throttled request would.
    """

    inner: MetadataStore = field(default_factory=MemoryMetadataStore)
    fault: Callable[[Sequence[Write], MetadataStore], None] | None = None
    transactions: int = 0
    queries: list[tuple[str, str, int]] = field(default_factory=list)

    def get(self, partition: str, row: str) -> Item | None:
        return self.inner.get(partition, row)

    def query(self, partition: str, prefix: str, *, after: str | None = None, limit: int = 100) -> list[Item]:
        found = self.inner.query(partition, prefix, after=after, limit=limit)
        self.queries.append((partition, prefix, len(found)))
        return found

    def transact(self, writes: Sequence[Write]) -> None:
        self.transactions += 1
        if self.fault is not None:
            self.fault(writes, self.inner)
        else:
            self.inner.transact(writes)


def commit_then_lose_answer(times: int) -> Callable[[Sequence[Write], MetadataStore], None]:
    """The write commits, then the caller hears a timeout (`times` times in a row)."""
    remaining = [times]

    def fault(writes: Sequence[Write], inner: MetadataStore) -> None:
        inner.transact(writes)
        if remaining[0] > 0:
            remaining[0] -= 1
            raise OutcomeUnknown("read timeout after the request was sent")

    return fault
