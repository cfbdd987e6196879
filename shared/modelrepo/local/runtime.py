"""`modelrepo serve`: the drop-folder watcher and the HTTP server over one repository."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.errors import InvalidInput
from modelrepo.events import ObjectCreated
from modelrepo.local.bootstrap import build_api, build_repository
from modelrepo.local.server import ApiServer
from modelrepo.local.watcher import DropFolderWatcher
from modelrepo.service import ModelRepository
from modelrepo.settings import LocalSettings

log = logging.getLogger(__name__)


def rejecter(repository: ModelRepository) -> Callable[[ObjectCreated, str], object]:
    """How the watcher records a drop-folder entry the store refused (a symlink, a FIFO, a reserved
    name) as a listed rejection with the store's reason.

    The core records rejections only for keys outside the layout, and offers no public call for
    this; its one implementation is `_reject`, used here rather than copied. (Asked of the core's
    owner: a public `ModelRepository.record_rejection(event, reason)`.)
    """
    public: Callable[[ObjectCreated, str], object] | None = getattr(repository, "record_rejection", None)
    return public or repository._reject


class LocalRuntime:
    def __init__(self, settings: LocalSettings) -> None:
        settings.require_safe_binding()
        self.settings = settings
        self.repository = build_repository(settings)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        try:
            self.server = ApiServer((settings.host, settings.port), build_api(settings, self.repository), key)
        except OSError as error:
            self.repository.metadata.close()
            raise InvalidInput(f"cannot listen on {settings.host}:{settings.port}: {error.strerror}") from None
        store = self.repository.artifacts
        assert isinstance(store, FolderArtifactStore)
        self.store = store
        self.dead_letters = FolderDeadLetterQueue(settings.dead_letters)
        self.watcher = DropFolderWatcher(
            store, self.repository.record_artifact, self.dead_letters, reject=rejecter(self.repository)
        )
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
        self._tidy()
        self.watcher.start()
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted."""
        self._tidy()
        self.watcher.start()
        log.info("watching %s; API on %s/api", self.settings.uploads, self.url)
        try:
            self.server.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.watcher.stop()
        self.repository.metadata.close()
        self.store.close()
