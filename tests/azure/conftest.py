"""Fixtures of the Azure host tests: the function app pointed at its own containers and table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from functions_azure import bootstrap
from modelrepo.adapters.azure import POISON_QUEUE
from tests.azure.host import BlobTriggerHost
from tests.fixtures.azure import Azurite, unique_name


@dataclass
class AzureApp:
    """The function app's storage as a test sees it, and the host that delivers its events."""

    service: BlobServiceClient
    tables: TableServiceClient
    queues: QueueServiceClient
    uploads: str
    registry: str
    dead_letters: str
    table: str
    host: BlobTriggerHost
    settings: dict[str, str]  # the app settings the functions get

    def upload(self, key: str, data: bytes) -> None:
        self.service.get_blob_client(self.uploads, key).upload_blob(data, overwrite=True)

    def rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every table row's document (not its ETag or timestamp), to compare before and after."""
        entities = self.tables.get_table_client(self.table).list_entities()
        return {(e["PartitionKey"], e["RowKey"]): {k: v for k, v in e.items() if k.startswith("doc")} for e in entities}

    def blobs(self, container: str) -> dict[str, str]:
        return {b.name: b.etag for b in self.service.get_container_client(container).list_blobs()}


@pytest.fixture
def azure_app(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureApp]:
    uploads, registry, table = unique_name("uploads-"), unique_name("registry-"), unique_name("t")
    dead_letters = unique_name("deadletter-")
    settings = {
        "ModelRepoStorage": azurite.connection_string,
        "MODELREPO_UPLOADS_CONTAINER": uploads,
        "MODELREPO_REGISTRY_CONTAINER": registry,
        "MODELREPO_DEADLETTER_CONTAINER": dead_letters,
        "MODELREPO_TABLE": table,
        "MODELREPO_REGISTER_DEADLINE_SECONDS": "60",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    storage = azurite.storage()
    # The poison queue has a fixed name per account: start each test with none.
    with suppress(ResourceNotFoundError):
        storage.queues.delete_queue(POISON_QUEUE)
    bootstrap.reset()
    bootstrap.runtime()  # with a connection string it creates the containers and the table
    host = BlobTriggerHost(storage.blobs, storage.queues)
    yield AzureApp(
        storage.blobs, storage.tables, storage.queues, uploads, registry, dead_letters, table, host, settings
    )
    bootstrap.reset()
