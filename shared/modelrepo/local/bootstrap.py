"""The local host's composition root: the only place that builds the embedded adapters."""

from __future__ import annotations

from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.api import Api
from modelrepo.errors import StoreUnavailable
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings


def open_metadata(settings: LocalSettings) -> SqliteMetadataStore:
    """The metadata database; a missing one is created only where that loses nothing.

    Pinned bytes in the registry mean versions were registered: a fresh, empty database beside
    them would number versions from 1 again and forget every deployment, silently. That takes
    `--init` (settings.init_database).
    """
    database = settings.database
    if not database.exists() and not settings.init_database and FolderArtifactStore.holds_pinned(settings.registry):
        raise StoreUnavailable(
            f"the metadata database {database} is missing, but {settings.registry} holds the pinned bytes of "
            "registered versions; restore the database from a backup, or pass --init to start a new, empty "
            "one (versions would be numbered from 1 again)"
        )
    return SqliteMetadataStore(database)


def build_repository(settings: LocalSettings) -> ModelRepository:
    metadata = open_metadata(settings)
    try:
        artifacts = FolderArtifactStore(settings.uploads, settings.registry, ledger=settings.drop_folder_ledger)
    except BaseException:
        metadata.close()
        raise
    return ModelRepository(
        artifacts,
        metadata,
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
    )


def build_api(settings: LocalSettings, repository: ModelRepository | None = None) -> Api:
    return Api(repository or build_repository(settings), max_body_bytes=settings.max_body_bytes)
