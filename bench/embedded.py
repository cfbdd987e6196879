"""modelrepo's side, through its public entry points: the local bootstrap and the HTTP API."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bench.counting import CountingMetadataStore
from bench.servers import JsonClient
from modelrepo.events import ObjectCreated
from modelrepo.local.bootstrap import build_repository
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings

EXPERIMENT = "bench"


def repository(root: Path) -> tuple[ModelRepository, CountingMetadataStore]:
    """The repository `modelrepo serve` would build on `root`, with its metadata calls counted."""
    built = build_repository(LocalSettings(root=root))
    counting = CountingMetadataStore(built.metadata)
    return ModelRepository(built.artifacts, counting, retry=built.retry_policy), counting


def seed_artifact(
    repo: ModelRepository, run_id: str = "run-1", payload: bytes = b"model bytes\n", experiment_id: str = EXPERIMENT
) -> str:
    """Upload and record one artifact, the thing every registration points at; its runArtifactId."""
    info = repo.artifacts.put(f"{experiment_id}/{run_id}/model.bin", io.BytesIO(payload))
    result = repo.record_artifact(ObjectCreated.from_object(info, "bench"))
    assert result.artifact is not None, result
    return result.artifact.run_artifact_id


def versions(repo: ModelRepository, experiment_id: str = EXPERIMENT) -> list[int]:
    """Every version number, through the paged listing."""
    found: list[int] = []
    cursor: str | None = None
    while True:
        page = repo.list_models(experiment_id, limit=1000, cursor=cursor)
        found.extend(m.version for m in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return sorted(found)


def http_versions(client: JsonClient, experiment_id: str = EXPERIMENT) -> list[int]:
    found: list[int] = []
    cursor: str | None = None
    while True:
        query = f"?limit=1000&cursor={cursor}" if cursor else "?limit=1000"
        page: dict[str, Any] = client.call("GET", f"/api/experiments/{experiment_id}/models{query}")
        found.extend(int(m["version"]) for m in page["items"])
        cursor = page.get("nextCursor")
        if not cursor:
            return sorted(found)


def gapless(found: list[int], expected: int) -> bool:
    """Versions are exactly 1..expected: none lost, none doubled, no gap."""
    return found == list(range(1, expected + 1))
