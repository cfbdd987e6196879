"""The Azure host's settings: one way to connect, valid names, nothing built at import time."""

from __future__ import annotations

import pytest

from functions_azure import bootstrap
from modelrepo.adapters.azure import (
    POISON_QUEUE,
    AzureBlobArtifactStore,
    AzureDeadLetterQueue,
    AzureSettings,
    AzureTableMetadataStore,
    open_backend,
)
from modelrepo.cli import main
from modelrepo.errors import InvalidInput

IDENTITY = {
    "ModelRepoStorage__blobServiceUri": "https://account.blob.core.windows.net/",
    "ModelRepoStorage__tableServiceUri": "https://account.table.core.windows.net/",
    "ModelRepoStorage__queueServiceUri": "https://account.queue.core.windows.net/",
    "ModelRepoStorage__clientId": "00000000-0000-0000-0000-000000000001",
    "MODELREPO_UPLOADS_CONTAINER": "uploads",
}


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"MODELREPO_UPLOADS_CONTAINER": "uploads"}, "set either ModelRepoStorage"),
        ({**IDENTITY, "ModelRepoStorage": "UseDevelopmentStorage=true"}, "set either ModelRepoStorage"),
        ({k: v for k, v in IDENTITY.items() if "table" not in k}, "set either ModelRepoStorage"),
        ({k: v for k, v in IDENTITY.items() if "queue" not in k}, "__queueServiceUri"),
        ({**IDENTITY, "ModelRepoStorage__blobServiceUri": "http://plain.example/"}, "blob_service_uri"),
        ({k: v for k, v in IDENTITY.items() if k != "MODELREPO_UPLOADS_CONTAINER"}, "uploads_container"),
        ({**IDENTITY, "MODELREPO_UPLOADS_CONTAINER": "Uploads"}, "uploads_container"),
        ({**IDENTITY, "MODELREPO_UPLOADS_CONTAINER": "up--loads"}, "'--'"),
        ({**IDENTITY, "MODELREPO_REGISTRY_CONTAINER": "uploads"}, "three different containers"),
        ({**IDENTITY, "MODELREPO_DEADLETTER_CONTAINER": "registry"}, "three different containers"),
        ({**IDENTITY, "MODELREPO_RECONCILE_SCHEDULE": "*/5 * * * *"}, "reconcile_schedule"),
        ({**IDENTITY, "MODELREPO_RECONCILE_BUDGET_SECONDS": "900"}, "reconcile_budget_seconds"),
        ({**IDENTITY, "MODELREPO_TABLE": "model-repo"}, "table"),
        ({**IDENTITY, "MODELREPO_REGISTER_DEADLINE_SECONDS": "0"}, "register_deadline_seconds"),
    ],
)
def test_bad_app_settings_are_refused_with_a_reason(environ: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidInput, match="invalid app settings") as refused:
        AzureSettings.from_environment(environ)
    assert says in refused.value.detail


def test_managed_identity_settings_build_keyless_clients_without_network() -> None:
    settings = AzureSettings.from_environment(IDENTITY)
    assert settings.uses_identity and settings.connection_string is None
    runtime = bootstrap.build(settings)  # builds clients only; nothing is called yet
    assert isinstance(runtime.repository.artifacts, AzureBlobArtifactStore)
    assert isinstance(runtime.repository.metadata, AzureTableMetadataStore)
    service = runtime.repository.artifacts._service
    assert getattr(service.credential, "account_key", None) is None
    assert runtime.api.max_body_bytes == settings.max_body_bytes


def test_the_connection_string_is_secret_in_reprs() -> None:
    settings = AzureSettings.from_environment(
        {"ModelRepoStorage": "AccountName=a;AccountKey=c2VjcmV0", "MODELREPO_UPLOADS_CONTAINER": "uploads"}
    )
    assert "c2VjcmV0" not in repr(settings) and not settings.uses_identity


def test_the_cli_backend_reads_the_same_settings_and_builds_without_network(
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = open_backend(IDENTITY)
    assert isinstance(backend.dead_letters, AzureDeadLetterQueue)
    queue = backend.dead_letters._queue
    assert queue.queue_name == POISON_QUEUE and queue.url.startswith(IDENTITY["ModelRepoStorage__queueServiceUri"])
    artifacts = backend.repository.artifacts
    assert isinstance(artifacts, AzureBlobArtifactStore)
    assert getattr(artifacts._service.credential, "account_key", None) is None  # a token credential, no key
    backend.close()
    # Without the app settings the command says which are missing, and fails.
    assert main(["dead-letters", "--backend", "azure"], environ={}) == 1
    assert "invalid app settings" in capsys.readouterr().err
