"""The client against the core on the in-memory fakes: in-process, and over a real loopback HTTP
front that hands each request to `Api.handle` the way every host does."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
from modelrepo.api import Api, Request
from modelrepo.events import ObjectCreated
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.client.loopback import Answer, Loopback, Wire, loopback

WEIGHTS = b"client test weights " * 4096


@dataclass
class Repo:
    repository: ModelRepository
    api: Api

    def upload(self, key: str, data: bytes = WEIGHTS) -> str:
        """Put bytes into the bucket, record the upload, return its run artifact id."""
        info = self.repository.artifacts.put(key, io.BytesIO(data))
        result = self.repository.record_artifact(ObjectCreated.from_object(info, "client-test"))
        assert result.artifact is not None
        return result.artifact.run_artifact_id


def make_repo(artifacts: MemoryArtifactStore | None = None) -> Repo:
    retry = RetryPolicy(base_seconds=0.0005, cap_seconds=0.005, deadline_seconds=20)
    repository = ModelRepository(artifacts or MemoryArtifactStore(), MemoryMetadataStore(), retry=retry)
    return Repo(repository, Api(repository))


@pytest.fixture
def repo() -> Repo:
    return make_repo()


def to_request(wire: Wire, strip: str = "") -> Request:
    return Request(wire.method, wire.path.removeprefix(strip), wire.params, wire.headers, wire.body)


def api_handler(
    api: Api, *, key: str | None = None, before: Callable[[Wire], Answer | None] | None = None
) -> Callable[[Wire], Answer]:
    """A host in front of `api`: an optional bearer key check, an optional interception, then the API."""

    def handle(wire: Wire) -> Answer:
        if before is not None and (early := before(wire)) is not None:
            return early
        if key is not None and wire.path != "/api/health" and wire.headers.get("authorization") != f"Bearer {key}":
            return Answer(401, {"Content-Type": "application/problem+json"}, b'{"status":401,"detail":"wrong key"}')
        response = api.handle(to_request(wire))
        body = response.body
        if response.stream is not None:
            try:
                body = b"".join(response.stream)
            finally:
                response.stream.close()
        return Answer(response.status, dict(response.headers), body)

    return handle


@pytest.fixture
def front(repo: Repo) -> Iterator[Loopback]:
    with loopback(api_handler(repo.api)) as server:
        yield server
