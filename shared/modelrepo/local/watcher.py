"""The drop folder: turns files written under `<root>/artifacts/` into `ObjectCreated` facts.

A file is handed on only once it is completely written: after the writer closed it (inotify's
IN_CLOSE_WRITE) or it was renamed into place, and its size and mtime then held still for a quiet
period. Writers that never report a close are picked up after a longer quiet period.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from modelrepo.adapters.folder import TEMP_PREFIX, FolderArtifactStore
from modelrepo.errors import InvalidInput
from modelrepo.events import ObjectCreated
from modelrepo.ports import ObjectInfo

log = logging.getLogger(__name__)

ACTOR = "local-watcher"


@dataclass
class _Pending:
    last_event: float
    closed: bool
    stat: tuple[int, int] | None = None


def _as_text(path: str | bytes) -> str:
    return path if isinstance(path, str) else os.fsdecode(path)


class DropFolderWatcher(FileSystemEventHandler):
    def __init__(
        self,
        store: FolderArtifactStore,
        deliver: Callable[[ObjectCreated], object],
        *,
        quiet_seconds: float = 0.2,
        unclosed_quiet_seconds: float = 3.0,
        workers: int = 4,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._quiet = quiet_seconds
        self._unclosed_quiet = unclosed_quiet_seconds
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="record")
        self._observer = Observer()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._observer.schedule(self, str(self._store.uploads), recursive=True)
        self._observer.start()
        for name, target in (("drop-folder-settle", self._settle_loop), ("drop-folder-scan", self._initial_scan)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- events ----------------------------------------------------------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            # Files may land in a new folder before its watch exists: look inside it.
            folder = _as_text(event.dest_path if isinstance(event, DirMovedEvent) else event.src_path)
            self._scan(Path(folder))
        elif isinstance(event, FileMovedEvent):
            self._note(Path(_as_text(event.dest_path)), closed=True)
        elif isinstance(event, FileClosedEvent):
            self._note(Path(_as_text(event.src_path)), closed=True)
        elif isinstance(event, FileCreatedEvent):
            # A creation says nothing about whether the writer is done: a file written into a new
            # folder before its watch existed is only ever reported as created (after `_scan` saw it
            # closed), while a writer that is still busy goes on to cause modified events.
            self._note(Path(_as_text(event.src_path)), closed=None)
        elif isinstance(event, FileModifiedEvent):
            self._note(Path(_as_text(event.src_path)), closed=False)

    def _note(self, path: Path, *, closed: bool | None) -> None:
        """Note activity on a file; `closed` None keeps what is known (new files count as open)."""
        if path.name.startswith(TEMP_PREFIX):
            return
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                self._pending[path] = _Pending(time.monotonic(), bool(closed))
            else:
                pending.last_event = time.monotonic()
                if closed is not None:
                    pending.closed = closed
                pending.stat = None

    def _initial_scan(self) -> None:
        """Files that arrived while nothing was watching are recorded too (idempotently)."""
        self._scan(self._store.uploads)

    def _scan(self, folder: Path) -> None:
        for parent, _dirs, files in os.walk(folder):
            if self._stopping.is_set():
                return
            for name in files:
                self._note(Path(parent) / name, closed=True)

    # --- settling and delivery -------------------------------------------------------------------

    def _settle_loop(self) -> None:
        while not self._stopping.wait(self._quiet / 2):
            for path in self._settled():
                self._pool.submit(self._record, path)

    def _settled(self) -> list[Path]:
        """Paths quiet long enough whose size and mtime did not move since the last look."""
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            due = [
                (path, p)
                for path, p in self._pending.items()
                if now - p.last_event >= (self._quiet if p.closed else self._unclosed_quiet)
            ]
        for path, pending in due:
            try:
                stat = path.stat()
            except OSError:
                with self._lock:
                    self._pending.pop(path, None)  # deleted before it settled
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            with self._lock:
                if self._pending.get(path) is not pending:
                    continue
                if pending.stat == signature:
                    del self._pending[path]
                    ready.append(path)
                else:
                    pending.stat = signature
                    pending.last_event = now - (self._quiet if pending.closed else self._unclosed_quiet) + self._quiet
        return ready

    def _record(self, path: Path) -> None:
        try:
            info = self._object_info(path)
            if info is None:
                return
            result = self._deliver(ObjectCreated.from_object(info, ACTOR))
            log.info("%s: %s", info.key, getattr(result, "outcome", result))
        except Exception:
            log.exception("could not record %s; it will be retried on the next change or restart", path)

    def _object_info(self, path: Path) -> ObjectInfo | None:
        key = path.relative_to(self._store.uploads).as_posix()
        try:
            return self._store.head(key)
        except InvalidInput:
            # A name the store will not serve (a backslash, say): report it so the core rejects it.
            try:
                stat = path.stat()
            except OSError:
                return None
            return ObjectInfo(
                key=key,
                size=stat.st_size,
                etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
                modified_at=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC),
                sequencer=f"{stat.st_mtime_ns:020d}",
            )
