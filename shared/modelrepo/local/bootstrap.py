"""The local host's composition root: the only place that builds the embedded adapters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.api import Api
from modelrepo.dispatch import Dispatcher
from modelrepo.projections import Indexer
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings

if TYPE_CHECKING:
    from modelrepo.local.webhooks import DeliveryWorker


def build_repository(settings: LocalSettings) -> ModelRepository:
    return ModelRepository(
        FolderArtifactStore(settings.uploads, settings.registry),
        SqliteMetadataStore(settings.database),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
        source=settings.event_source,
        default_approval=settings.default_approval,
    )


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
    return Api(repository or build_repository(settings), max_body_bytes=settings.max_body_bytes)
