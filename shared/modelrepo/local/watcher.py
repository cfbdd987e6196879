"""The drop folder: turns files written under `<root>/artifacts/` into `ObjectCreated` facts.

A file is handed on only once it is completely written: after the writer closed it (inotify's
IN_CLOSE_WRITE) or it was renamed into place, and its size and mtime then held still for a quiet
period. Without a close, quiet periods decide: a file seen only as created (its writer finished
before the watch on a new folder existed; a writer still busy would now cause modify events) after
a short one, a file still being modified after a long one.
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

from modelrepo.adapters.folder import TEMP_PREFIX, FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.errors import InvalidInput
from modelrepo.events import ObjectCreated
from modelrepo.ports import ObjectInfo

log = logging.getLogger(__name__)

ACTOR = "local-watcher"


CLOSED, CREATED, MODIFIED = "closed", "created", "modified"
# Only what decides when a file is complete: leaving out opens and read-only closes keeps our own
# digest reads (and any reader's) from flooding the watcher with events.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]


@dataclass
class _Pending:
    last_event: float
    state: str
    stat: tuple[int, int] | None = None


def _as_text(path: str | bytes) -> str:
    return path if isinstance(path, str) else os.fsdecode(path)


class DropFolderWatcher(FileSystemEventHandler):
    def __init__(
        self,
        store: FolderArtifactStore,
        deliver: Callable[[ObjectCreated], object],
        dead_letters: FolderDeadLetterQueue,
        *,
        attempts: int = 3,
        retry_seconds: float = 0.5,
        quiet_seconds: float = 0.2,
        created_quiet_seconds: float = 0.5,
        unclosed_quiet_seconds: float = 3.0,
        workers: int = 4,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._dead_letters = dead_letters
        self._attempts = attempts
        self._retry_seconds = retry_seconds
        self._quiet = quiet_seconds
        self._created_quiet = created_quiet_seconds
        self._unclosed_quiet = unclosed_quiet_seconds
        self._pending: dict[Path, _Pending] = {}
        self._outcomes: dict[str, int] = {}
        self._last_key = ""
        self._reported_at = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="record")
        self._observer = Observer()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._observer.schedule(self, str(self._store.uploads), recursive=True, event_filter=WATCHED_EVENTS)
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
        if isinstance(event, DirMovedEvent):
            # A folder moved in brings files nobody saw being written: look inside it. (For a new
            # folder, watchdog itself reports what landed in it before its watch existed.)
            self._scan(Path(_as_text(event.dest_path)))
        elif isinstance(event, FileMovedEvent):
            self._note(Path(_as_text(event.dest_path)), CLOSED)
        elif isinstance(event, FileClosedEvent):
            self._note(Path(_as_text(event.src_path)), CLOSED)
        elif isinstance(event, FileCreatedEvent):
            self._note(Path(_as_text(event.src_path)), CREATED)
        elif isinstance(event, FileModifiedEvent):
            self._note(Path(_as_text(event.src_path)), MODIFIED)

    def _note(self, path: Path, state: str) -> None:
        if path.name.startswith(TEMP_PREFIX):
            return
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                self._pending[path] = _Pending(time.monotonic(), state)
            else:
                pending.last_event = time.monotonic()
                # A close is final until the file changes again; a late "created" does not undo it.
                if not (state == CREATED and pending.state == CLOSED):
                    pending.state = state
                pending.stat = None

    def _initial_scan(self) -> None:
        """Files that arrived while nothing was watching are recorded too (idempotently)."""
        self._scan(self._store.uploads)

    def _scan(self, folder: Path) -> None:
        for parent, _dirs, files in os.walk(folder):
            if self._stopping.is_set():
                return
            for name in files:
                self._note(Path(parent) / name, CLOSED)

    # --- settling and delivery -------------------------------------------------------------------

    def _settle_loop(self) -> None:
        while not self._stopping.wait(self._quiet / 2):
            for path in self._settled():
                self._pool.submit(self._record, path)
            self._report()

    def _tally(self, key: str, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
            self._last_key = key

    def _report(self) -> None:
        """One log line per second at most, however many files arrive: a burst of thousands of
        uploads would otherwise spend a seventh of its time logging (measured)."""
        now = time.monotonic()
        with self._lock:
            if not self._outcomes or now - self._reported_at < 1.0:
                return
            counts, last, self._outcomes = self._outcomes, self._last_key, {}
            self._reported_at = now
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        log.info("drop folder: %s (latest %s)", summary, last)

    def _settled(self) -> list[Path]:
        """Paths quiet long enough whose size and mtime did not move since the last look."""
        now = time.monotonic()
        ready: list[Path] = []
        with self._lock:
            due = [(path, p) for path, p in self._pending.items() if now - p.last_event >= self._quiet_for(p)]
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
                elif pending.state == CREATED and signature[0] == 0:
                    pending.state = MODIFIED  # created empty: the writer has not started yet
                else:
                    pending.stat = signature  # look once more after one short quiet period
                    pending.last_event = now - self._quiet_for(pending) + self._quiet
        return ready

    def _quiet_for(self, pending: _Pending) -> float:
        return {CLOSED: self._quiet, CREATED: self._created_quiet}.get(pending.state, self._unclosed_quiet)

    def _record(self, path: Path) -> None:
        """Deliver one upload, retrying a few times; then park it as a dead letter, never lose it."""
        try:
            info = self._object_info(path)
        except OSError as error:
            log.warning("cannot read %s (%s); it is recorded on its next change or restart", path, error)
            return
        if info is None:
            return
        event = ObjectCreated.from_object(info, ACTOR)
        for attempt in range(1, self._attempts + 1):
            try:
                result = self._deliver(event)
            except Exception as error:
                if attempt == self._attempts:
                    letter = self._dead_letters.park(event, f"{type(error).__name__}: {error}")
                    log.error("%s failed %d times; parked as dead letter %s", info.key, attempt, letter.handle)
                    return
                log.warning("%s failed (%s); retrying", info.key, error)
                if self._stopping.wait(self._retry_seconds * attempt):
                    return
            else:
                outcome = str(getattr(result, "outcome", result))
                log.debug("%s: %s", info.key, outcome)
                self._tally(info.key, outcome)
                return

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
