"""Fixtures of the Azure host tests: the function app pointed at its own containers and table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from functions_azure import bootstrap
from tests.azure.host import BlobTriggerHost
from tests.fixtures.azure import Azurite, unique_name


@dataclass
class AzureApp:
    """The function app's storage as a test sees it, and the host that delivers its events."""

    service: BlobServiceClient
    tables: TableServiceClient
    uploads: str
    registry: str
    table: str
    host: BlobTriggerHost

    def upload(self, key: str, data: bytes) -> None:
        self.service.get_blob_client(self.uploads, key).upload_blob(data, overwrite=True)


@pytest.fixture
def azure_app(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureApp]:
    uploads, registry, table = unique_name("uploads-"), unique_name("registry-"), unique_name("t")
    for name, value in {
        "ModelRepoStorage": azurite.connection_string,
        "MODELREPO_UPLOADS_CONTAINER": uploads,
        "MODELREPO_REGISTRY_CONTAINER": registry,
        "MODELREPO_TABLE": table,
        "MODELREPO_REGISTER_DEADLINE_SECONDS": "60",
    }.items():
        monkeypatch.setenv(name, value)
    bootstrap.reset()
    bootstrap.runtime()  # with a connection string it creates the containers and the table
    storage = azurite.storage()
    yield AzureApp(storage.blobs, storage.tables, uploads, registry, table, BlobTriggerHost(storage.blobs))
    bootstrap.reset()
