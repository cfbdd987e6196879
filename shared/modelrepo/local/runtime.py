"""`modelrepo serve`: the drop-folder watcher and the HTTP server over one repository."""

from __future__ import annotations

import logging
import threading

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.errors import InvalidInput
from modelrepo.local.bootstrap import build_api, build_repository, build_workers
from modelrepo.local.server import ApiServer
from modelrepo.local.watcher import DropFolderWatcher
from modelrepo.settings import LocalSettings

log = logging.getLogger(__name__)


class LocalRuntime:
    def __init__(self, settings: LocalSettings) -> None:
        settings.require_safe_binding()
        self.settings = settings
        self.repository = build_repository(settings)
        try:
            self.server = ApiServer(
                (settings.host, settings.port), build_api(settings, self.repository), settings.credentials
            )
        except OSError as error:
            self.repository.close()
            raise InvalidInput(f"cannot listen on {settings.host}:{settings.port}: {error.strerror}") from None
        store = self.repository.artifacts
        assert isinstance(store, FolderArtifactStore)
        self.store = store
        self.dead_letters = FolderDeadLetterQueue(settings.dead_letters)
        self.watcher = DropFolderWatcher(
            store, self.repository.record_artifact, self.dead_letters, reject=self.repository.record_rejection
        )
        self.deliveries = build_workers(settings, self.repository)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def _tidy(self) -> None:
        """Temporary files of writers that crashed (a pin, a dead letter) go before anything starts."""
        removed = self.store.remove_stale_temp_files() + self.dead_letters.remove_stale_temp_files()
        if removed:
            log.info("removed %d temporary file(s) left by crashed writers", removed)

    def start(self) -> None:
        """Run in background threads (tests, benchmarks)."""
        self._start_workers()
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted."""
        self._start_workers()
        log.info("watching %s; API on %s/api", self.settings.uploads, self.url)
        try:
            self.server.serve_forever()
        finally:
            self.stop()

    def _start_workers(self) -> None:
        self._tidy()
        for worker in self.deliveries:
            worker.start()
        self.watcher.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.watcher.stop()
        for worker in self.deliveries:
            worker.stop()
        self.repository.close()
