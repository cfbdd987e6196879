"""The Azure host's composition root: the only code of the functions that reads app settings.

The settings and the clients are the adapter's (`modelrepo.adapters.azure`), shared with
`modelrepo ... --backend azure`, so the CLI works on exactly what the functions use. Nothing is
built at import time: the first invocation builds the repository once per worker process, and
later invocations reuse its clients (and their connection pools).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from modelrepo.adapters.azure import (
    AzureSettings,
    EventDelivery,
    build_repository,
    connect,
    create_container,
    event_delivery,
)
from modelrepo.service import ModelRepository

if TYPE_CHECKING:
    from modelrepo.api import Api


@dataclass(frozen=True)
class AzureRuntime:
    settings: AzureSettings
    repository: ModelRepository
    events: EventDelivery  # the index always; the Event Grid topic if one is configured

    @cached_property
    def api(self) -> Api:
        """The HTTP layer, imported on the first request: a worker that only records uploads,
        dispatches events or sweeps never loads it."""
        from modelrepo.api import Api

        return Api(
            self.repository,
            max_body_bytes=self.settings.max_body_bytes,
            actor_must_be_principal=self.settings.actor_must_be_principal,
        )


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
            _runtime.events.close()
            _runtime.repository.close()
        _runtime = None


def build(settings: AzureSettings) -> AzureRuntime:
    storage = connect(settings)
    if not settings.uses_identity:
        # Development against Azurite: create what infra/main.bicep creates in Azure.
        for container in (settings.uploads_container, settings.registry_container, settings.dead_letter_container):
            create_container(storage.blobs, container)
        storage.tables.create_table_if_not_exists(settings.table)
        # The hint queue: created by the hint sender before its first hint (`EventHints`), so that
        # a worker that commits nothing never loads the queue SDK.
    repository = build_repository(settings, storage)
    events = event_delivery(settings, storage, repository.metadata)
    # Every function that changes something (HTTP, uploads, reconcile) hints the dispatcher.
    repository.on_commit(events.hints.notify)
    return AzureRuntime(settings, repository, events)
