"""The local host's composition root: the only place that builds the embedded adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.api import Api
from modelrepo.dispatch import Dispatcher
from modelrepo.errors import StoreUnavailable
from modelrepo.projections import Indexer, indexer_listener
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings

if TYPE_CHECKING:
    from modelrepo.local.webhooks import DeliveryWorker


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


def build_repository(settings: LocalSettings, *, project_inline: bool = False) -> ModelRepository:
    """`project_inline`: keep the index in step right after each commit, for processes (the CLI)
    where no worker does it, as `modelrepo serve`'s does."""
    metadata = open_metadata(settings)
    try:
        artifacts = FolderArtifactStore(settings.uploads, settings.registry, ledger=settings.drop_folder_ledger)
    except BaseException:
        metadata.close()
        raise
    repository = ModelRepository(
        artifacts,
        metadata,
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
        source=settings.event_source,
        default_approval=settings.default_approval,
    )
    if project_inline:
        repository.on_commit(indexer_listener(repository.metadata))
    return repository


def build_workers(settings: LocalSettings, repository: ModelRepository) -> list[DeliveryWorker]:
    """The index subscriber and one delivery worker per webhook, each woken by the repository's commits."""
    from modelrepo.local.webhooks import DeliveryWorker, WebhookPublisher

    index = DeliveryWorker(
        Dispatcher(repository.metadata, Indexer(repository.metadata)), sweep_seconds=settings.sweep_seconds
    )
    repository.on_commit(index.notify)
    workers = [index]
    for url in settings.webhooks:
        assert settings.webhook_secret is not None  # the settings refuse webhooks without one
        publisher = WebhookPublisher(url, settings.webhook_secret.get_secret_value())
        worker = DeliveryWorker(Dispatcher(repository.metadata, publisher), sweep_seconds=settings.sweep_seconds)
        repository.on_commit(worker.notify)
        workers.append(worker)
    return workers


def build_api(settings: LocalSettings, repository: ModelRepository | None = None) -> Api:
    """The API over a given repository (serve), or over one that projects inline (the CLI).

    Only the served API applies MODELREPO_ACTOR_MUST_BE_PRINCIPAL: its requests carry the name of
    their API key. The CLI on the root itself has no key to check (it could write the files anyway)."""
    return Api(
        repository or build_repository(settings, project_inline=True),
        max_body_bytes=settings.max_body_bytes,
        actor_must_be_principal=settings.actor_must_be_principal and repository is not None,
        dead_letters=FolderDeadLetterQueue(settings.dead_letters),
    )
