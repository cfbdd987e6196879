"""The local host's composition root: the only place that builds the embedded adapters."""

from __future__ import annotations

from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.api import Api
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings


def build_repository(settings: LocalSettings) -> ModelRepository:
    return ModelRepository(
        FolderArtifactStore(settings.uploads, settings.registry),
        SqliteMetadataStore(settings.database),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
    )


def build_api(settings: LocalSettings, repository: ModelRepository | None = None) -> Api:
    return Api(repository or build_repository(settings), max_body_bytes=settings.max_body_bytes)
