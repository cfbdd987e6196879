"""The drop folder: turns files written under `<root>/artifacts/` into `ObjectCreated` facts.

A file is handed on only once it is completely written: after its writer closed it (inotify's
IN_CLOSE_WRITE) or it was renamed into place, and its size and mtime then held still for a quiet
period. Before it is handed on, the store asks the kernel whether any process still holds it open
for writing (a read lease, see `modelrepo.adapters.folder`): such a file is never recorded, not by
the events, the start-up scan or a quiet period; it is looked at again when its writer closes it.
Where that cannot be asked, quiet periods decide as before: a file seen only as created (its writer
finished before the watch on a new folder existed; a writer still busy would now cause modify
events) after a short one, a file still being modified after a long one.

Entries that are not objects (symlinks, FIFOs, devices, hard links, names reserved for our temporary
files) become rejections with the store's reason. A store that is out of space or unusable is not
the upload's fault: such a file is kept and retried with backoff until the store recovers, instead
of using up its attempts and being parked (which would need the same full disk).
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
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

from modelrepo.adapters.folder import TEMP_PREFIX, FolderArtifactStore, FolderDeadLetterQueue, Refused, StillWriting
from modelrepo.errors import InsufficientStorage, InvalidInput, ModelRepoError, StoreUnavailable
from modelrepo.events import ObjectCreated
from modelrepo.ports import ObjectInfo

log = logging.getLogger(__name__)

ACTOR = "local-watcher"


CLOSED, CREATED, MODIFIED, WRITING, RETRY = "closed", "created", "modified", "writing", "retry"
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
STORAGE_TROUBLE = (InsufficientStorage, StoreUnavailable)


@dataclass
class _Pending:
    due: float  # when to look at the file next (on the watcher's clock)
    state: str
    stat: tuple[int, int] | None = None
    failures: int = 0  # storage failures in a row


def record_workers() -> int:
    """One record worker per core this process may run on, two at least and four at most.

    A worker's sha256 and file reads release the GIL, so workers overlap on separate cores; more
    workers than cores only queue for the GIL, and every hand-off between them is a context switch
    that the writer of a burst pays for on the same cores. Two at least, so that one large file
    being digested does not hold up the small ones behind it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 2
    return min(4, max(2, cores))


def _as_text(path: str | bytes) -> str:
    return path if isinstance(path, str) else os.fsdecode(path)


class DropFolderWatcher(FileSystemEventHandler):
    """Watches the drop folder and hands complete files on.

    `deliver` records an object, `reject` records an entry the store refused with the reason
    (without it, refusals are only logged). `clock` times the quiet periods and retries (tests pass
    a fake one); `settle_interval` is how often the background loop looks for settled files (None:
    no loop, the caller calls `settle_once`); `observe(key, outcome)` hears every look's outcome
    ("recorded", "duplicate", "still open", "waiting for storage", ...); `workers` record at once
    (by default `record_workers()`).
    """

    def __init__(
        self,
        store: FolderArtifactStore,
        deliver: Callable[[ObjectCreated], object],
        dead_letters: FolderDeadLetterQueue,
        *,
        reject: Callable[[ObjectCreated, str], object] | None = None,
        attempts: int = 3,
        retry_seconds: float = 0.5,
        quiet_seconds: float = 0.05,
        created_quiet_seconds: float = 0.5,
        unclosed_quiet_seconds: float = 3.0,
        storage_retry_max_seconds: float = 5.0,
        workers: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        settle_interval: float | None = 0.1,
        observe: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._reject = reject
        self._dead_letters = dead_letters
        self._attempts = attempts
        self._retry_seconds = retry_seconds
        self._quiet = quiet_seconds
        self._created_quiet = created_quiet_seconds
        self._unclosed_quiet = unclosed_quiet_seconds
        self._storage_retry_max = storage_retry_max_seconds
        self._clock = clock
        self._settle_interval = settle_interval
        self._observe = observe
        self._pending: dict[Path, _Pending] = {}
        self._outcomes: dict[str, int] = {}
        self._last_key = ""
        self._reported_at = 0.0
        self._storage_trouble: str | None = None
        self._announced: set[Path] = set()  # files said to be still open for writing
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scanned = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers or record_workers(), thread_name_prefix="record")
        self._observer = Observer()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._observer.schedule(self, str(self._store.uploads), recursive=True, event_filter=WATCHED_EVENTS)
        self._observer.start()
        loops: list[tuple[str, Callable[[], None]]] = [("drop-folder-scan", self._initial_scan)]
        if self._settle_interval is not None:
            loops.append(("drop-folder-settle", self._settle_loop))
        for name, target in loops:
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

    def wait_scanned(self, timeout: float) -> bool:
        """Whether the start-up scan has noted every file that was there (tests wait for it)."""
        return self._scanned.wait(timeout)

    def state_of(self, path: Path) -> str | None:
        """What the watcher waits for with a file (None: nothing; it was handed on or never seen)."""
        with self._lock:
            pending = self._pending.get(path)
            return None if pending is None else pending.state

    # --- events ----------------------------------------------------------------------------------

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirMovedEvent):
            # A folder moved in brings files nobody saw being written: look inside it. (For a new
            # folder, watchdog itself reports what landed in it before its watch existed.)
            self._scan(Path(_as_text(event.dest_path)))
        elif isinstance(event, FileMovedEvent):
            self.notice(Path(_as_text(event.dest_path)), CLOSED)
        elif isinstance(event, FileClosedEvent):
            self.notice(Path(_as_text(event.src_path)), CLOSED)
        elif isinstance(event, FileCreatedEvent):
            self.notice(Path(_as_text(event.src_path)), CREATED)
        elif isinstance(event, FileModifiedEvent):
            self.notice(Path(_as_text(event.src_path)), MODIFIED)

    def notice(self, path: Path, state: str) -> None:
        """Something happened to `path`: look at it once it has been quiet long enough."""
        now = self._clock()
        with self._lock:
            pending = self._pending.get(path)
            if pending is None:
                self._pending[path] = _Pending(now + self._quiet_for(state), state)
                return
            # A close is final until the file changes again; a late "created" does not undo it.
            if not (state == CREATED and pending.state == CLOSED):
                pending.state = state
            pending.due = now + self._quiet_for(pending.state)
            pending.stat = None

    def _initial_scan(self) -> None:
        """Files that arrived while nothing was watching are recorded too (idempotently)."""
        try:
            self._scan(self._store.uploads)
        finally:
            self._scanned.set()

    def _scan(self, folder: Path) -> None:
        """Note every entry that is not a folder (symlinks and FIFOs too: they become rejections),
        never descending into a symlinked folder."""
        stack = [folder]
        while stack and not self._stopping.is_set():
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    self.notice(Path(entry.path), CLOSED)

    # --- settling and delivery -------------------------------------------------------------------

    def _settle_loop(self) -> None:
        assert self._settle_interval is not None
        while not self._stopping.wait(self._settle_interval):
            self.settle_once()

    def settle_once(self) -> list[Path]:
        """One look at the pending files: hand on those that settled; return them."""
        ready = self._settled()
        for path, failures in ready:
            self._pool.submit(self._record_safely, path, failures)
        self._report()
        return [path for path, _ in ready]

    def _tally(self, key: str, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] = self._outcomes.get(outcome, 0) + 1
            self._last_key = key
        if self._observe is not None:
            self._observe(key, outcome)

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

    def _settled(self) -> list[tuple[Path, int]]:
        """Paths quiet long enough whose size and mtime did not move since the last look (and the
        storage failures each has met in a row)."""
        now = self._clock()
        ready: list[tuple[Path, int]] = []
        with self._lock:
            due = [(path, p) for path, p in self._pending.items() if now >= p.due]
        for path, pending in due:
            try:
                stat = path.lstat()
            except OSError:
                with self._lock:
                    if self._pending.get(path) is pending:
                        del self._pending[path]  # deleted before it settled
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            with self._lock:
                if self._pending.get(path) is not pending:
                    continue
                if pending.stat == signature or pending.state == RETRY or not stat_module.S_ISREG(stat.st_mode):
                    del self._pending[path]
                    ready.append((path, pending.failures))
                elif pending.state == CREATED and signature[0] == 0:
                    pending.state = MODIFIED  # created empty: the writer has not started yet
                    pending.due = now + self._quiet_for(pending.state)
                else:
                    pending.stat = signature  # look once more after one short quiet period
                    pending.due = now + self._quiet
        return ready

    def _quiet_for(self, state: str) -> float:
        return {CLOSED: self._quiet, CREATED: self._created_quiet}.get(state, self._unclosed_quiet)

    def _again_later(self, path: Path, state: str, delay: float, *, failures: int = 0) -> None:
        """Look at `path` again after `delay`, unless an event has already asked for a look."""
        with self._lock:
            if path not in self._pending:
                self._pending[path] = _Pending(self._clock() + delay, state, failures=failures)

    def _record_safely(self, path: Path, failures: int) -> None:
        """Nothing a record attempt raises may vanish in the pool unnoticed: retry a few times."""
        try:
            self._record(path, failures)
        except Exception:
            if failures + 1 >= 2 * self._attempts:
                log.exception("giving up on %s; it is recorded on its next change, a restart or reconcile", path)
                return
            log.exception("recording %s failed unexpectedly; it is tried again", path)
            self._again_later(path, RETRY, self._retry_seconds * 2**failures, failures=failures + 1)

    def _record(self, path: Path, failures: int) -> None:
        """Deliver one upload, retrying a few times; then park it as a dead letter, never lose it."""
        key = path.relative_to(self._store.uploads).as_posix()
        try:
            found = self._store.examine(key)
        except InvalidInput:
            found = self._unaddressable(key, path)  # a name the store will not serve: the core rejects it
        except STORAGE_TROUBLE as error:
            self._storage_failed(path, error, failures)
            return
        except (OSError, ModelRepoError) as error:
            log.warning("cannot read %s (%s); it is recorded on its next change or restart", path, error)
            return
        if found is None:
            return
        if isinstance(found, StillWriting):
            self._again_later(path, WRITING, self._unclosed_quiet)
            if path.name.startswith(TEMP_PREFIX):
                return  # one of our own writers' temporary files, renamed into place when complete
            with self._lock:
                first = path not in self._announced
                self._announced.add(path)
            if first:
                log.info("%s is still open for writing; it is recorded once its writer closes it", key)
            self._tally(key, "still open")
            return
        with self._lock:
            self._announced.discard(path)
        if isinstance(found, Refused):
            reject = self._reject
            if reject is None:
                log.warning("%s is not recorded: it is %s", key, found.reason)
                return
            reason = found.reason
            self._deliver_retrying(path, found.event(ACTOR), lambda event: reject(event, reason), failures)
            return
        self._deliver_retrying(path, ObjectCreated.from_object(found, ACTOR), self._deliver, failures)

    def _deliver_retrying(
        self, path: Path, event: ObjectCreated, deliver: Callable[[ObjectCreated], object], failures: int
    ) -> None:
        for attempt in range(1, self._attempts + 1):
            try:
                result = deliver(event)
            except STORAGE_TROUBLE as error:
                self._storage_failed(path, error, failures)
                return
            except Exception as error:
                if attempt == self._attempts:
                    self._park(path, event, error, failures)
                    return
                log.warning("%s failed (%s); retrying", event.key, error)
                if self._stopping.wait(self._retry_seconds * attempt):
                    return
            else:
                self._storage_recovered()
                outcome = str(getattr(result, "outcome", result))
                log.debug("%s: %s", event.key, outcome)
                self._tally(event.key, outcome)
                return

    def _park(self, path: Path, event: ObjectCreated, error: Exception, failures: int) -> None:
        try:
            letter = self._dead_letters.park(event, f"{type(error).__name__}: {error}")
        except Exception as parking:
            # Not even a dead letter could be written (a full disk, say): keep it here instead.
            self._storage_failed(path, parking, failures)
            return
        log.error("%s failed %d times; parked as dead letter %s", event.key, self._attempts, letter.handle)

    def _storage_failed(self, path: Path, error: Exception, failures: int) -> None:
        """The store, not the upload, failed: try again with backoff until it recovers."""
        delay = min(self._storage_retry_max, self._retry_seconds * 2**failures)
        detail = getattr(error, "detail", str(error))
        with self._lock:
            first = self._storage_trouble is None
            self._storage_trouble = detail
        if first:
            log.error("cannot record uploads: %s; they are kept and retried until it recovers", detail)
        self._tally(path.relative_to(self._store.uploads).as_posix(), "waiting for storage")
        self._again_later(path, RETRY, delay, failures=failures + 1)

    def _storage_recovered(self) -> None:
        with self._lock:
            was, self._storage_trouble = self._storage_trouble, None
        if was is not None:
            log.warning("recording uploads again (the storage recovered from: %s)", was)

    def _unaddressable(self, key: str, path: Path) -> ObjectInfo | None:
        """What the core needs to reject a name the store cannot address (a backslash, say),
        taken from the entry itself without following or opening it."""
        try:
            stat = path.lstat()
        except OSError:
            return None
        return ObjectInfo(
            key=key,
            size=stat.st_size if stat_module.S_ISREG(stat.st_mode) else 0,
            etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}",
            modified_at=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC),
            sequencer=f"{stat.st_mtime_ns:020d}",
        )
