"""The Azure host's composition root: the only code that reads app settings or builds SDK clients.

Nothing is built at import time: the first invocation builds the repository once per worker
process, and later invocations reuse its clients (and their connection pools).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from azure.identity import DefaultAzureCredential

from functions_azure.settings import AzureSettings
from modelrepo.adapters.azure import AzureBlobArtifactStore, AzureStorage, AzureTableMetadataStore, create_container
from modelrepo.api import Api
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository


@dataclass(frozen=True)
class AzureRuntime:
    settings: AzureSettings
    repository: ModelRepository
    api: Api


_lock = threading.Lock()
_runtime: AzureRuntime | None = None


def runtime() -> AzureRuntime:
    global _runtime  # noqa: PLW0603 - the one per-process cache of the composition root
    with _lock:
        if _runtime is None:
            _runtime = build(AzureSettings.from_environment(os.environ))
        return _runtime


def reset() -> None:
    """Forget the built runtime (tests change the app settings between cases)."""
    global _runtime  # noqa: PLW0603
    with _lock:
        if _runtime is not None:
            _runtime.repository.metadata.close()
        _runtime = None


def build(settings: AzureSettings) -> AzureRuntime:
    if settings.uses_identity:
        assert settings.blob_service_uri is not None and settings.table_service_uri is not None
        credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
        storage = AzureStorage.from_identity(settings.blob_service_uri, settings.table_service_uri, credential)
    else:
        assert settings.connection_string is not None
        storage = AzureStorage.from_connection_string(settings.connection_string.get_secret_value())
        # Development against Azurite: create what infra/main.bicep creates in Azure.
        for container in (settings.uploads_container, settings.registry_container):
            create_container(storage.blobs, container)
        storage.tables.create_table_if_not_exists(settings.table)
    repository = ModelRepository(
        AzureBlobArtifactStore(storage.blobs, settings.uploads_container, settings.registry_container),
        AzureTableMetadataStore(storage.tables.get_table_client(settings.table)),
        retry=RetryPolicy(deadline_seconds=settings.register_deadline_seconds),
    )
    return AzureRuntime(settings, repository, Api(repository, max_body_bytes=settings.max_body_bytes))
