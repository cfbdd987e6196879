"""The drop-folder watcher on an injected clock: quiet periods are fake seconds, so nothing here
depends on how fast the machine is. The watcher's own settle loop is off; the test runs the passes.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.events import ObjectCreated
from modelrepo.local.watcher import MODIFIED, WRITING, DropFolderWatcher

UNCLOSED = 600.0  # fake seconds: a file mistaken for one still being modified would wait this long


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class Deliveries:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.seen: dict[str, tuple[str | None, int, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ObjectCreated) -> None:
        with self._lock:
            self.seen[event.key] = (event.sha256, event.size, self.clock())


def drive(
    watcher: DropFolderWatcher, clock: FakeClock, done: Callable[[], object], timeout: float = 60.0, step: float = 0.05
) -> None:
    """Run settle passes, `step` fake seconds apart, until `done()` (polling real time)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the watcher did not get there"
        clock.advance(step)
        watcher.settle_once()
        time.sleep(0.01)


class Looks:
    """Every outcome the watcher reports: the proof that it looked at a file."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, key: str, outcome: str) -> None:
        with self._lock:
            self.outcomes.append((key, outcome))

    def count(self, key: str, outcome: str) -> int:
        with self._lock:
            return self.outcomes.count((key, outcome))


def make_watcher(
    tmp_path: Path, looks: Looks | None = None
) -> tuple[FolderArtifactStore, DropFolderWatcher, FakeClock, Deliveries]:
    store = FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")
    clock = FakeClock()
    deliveries = Deliveries(clock)
    watcher = DropFolderWatcher(
        store,
        deliveries,
        FolderDeadLetterQueue(tmp_path / "dead-letters"),
        quiet_seconds=0.2,
        created_quiet_seconds=0.5,
        unclosed_quiet_seconds=UNCLOSED,
        clock=clock,
        settle_interval=None,
        observe=looks,
    )
    return store, watcher, clock, deliveries


def test_files_in_new_folders_do_not_wait_for_the_unclosed_quiet_period(tmp_path: Path) -> None:
    store, watcher, clock, deliveries = make_watcher(tmp_path)
    watcher.start()
    try:
        began = clock()
        keys = [f"exp/run-{i:03d}/model.bin" for i in range(40)]
        for key in keys:
            path = store.uploads / key
            path.parent.mkdir(parents=True)  # a new folder: its watch is added after the file lands
            path.write_bytes(key.encode() * 1000)
        drive(watcher, clock, lambda: len(deliveries.seen) == len(keys))
    finally:
        watcher.stop()
    assert sorted(deliveries.seen) == keys
    assert max(at for _, _, at in deliveries.seen.values()) - began < UNCLOSED


def test_a_file_still_open_for_writing_is_never_handed_on_not_even_by_the_start_up_scan(tmp_path: Path) -> None:
    looks = Looks()
    store, watcher, clock, deliveries = make_watcher(tmp_path, looks)
    key = "exp1/run1/model.bin"
    path = store.uploads / key
    path.parent.mkdir(parents=True)
    with path.open("wb") as writer:
        writer.write(b"the first half, ")
        writer.flush()
        watcher.start()  # the start-up scan takes every file it finds as closed
        try:
            assert watcher.wait_scanned(timeout=60)
            drive(watcher, clock, lambda: looks.count(key, "still open") == 1)
            assert watcher.state_of(path) == WRITING
            clock.advance(2 * UNCLOSED)  # the writer pauses far beyond every quiet period
            drive(watcher, clock, lambda: looks.count(key, "still open") == 2)  # looked again: still open
            assert deliveries.seen == {}
            writer.write(b"the second half")
        except BaseException:
            watcher.stop()
            raise
    try:
        drive(watcher, clock, lambda: deliveries.seen)
    finally:
        watcher.stop()
    whole = b"the first half, the second half"
    assert deliveries.seen[key][:2] == (hashlib.sha256(whole).hexdigest(), len(whole))


def test_where_writers_cannot_be_seen_only_the_long_quiet_period_hands_an_unclosed_file_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback without leases (documented): a file never seen closed waits the unclosed quiet
    period; a writer pausing longer than that has its partial file recorded, and the rest once it
    closes the file."""
    monkeypatch.delattr(fcntl, "F_SETLEASE")
    looks = Looks()
    store, watcher, clock, deliveries = make_watcher(tmp_path, looks)
    key = "exp1/run1/model.bin"
    (store.uploads / "exp1" / "run1").mkdir(parents=True)
    watcher.start()
    try:
        # The start-up scan takes every file it finds as closed: let it finish before the file
        # exists, or a late scan would (rightly, without leases) hand the partial file on early.
        assert watcher.wait_scanned(timeout=60)
        with (store.uploads / key).open("wb") as writer:
            writer.write(b"the first half, ")
            writer.flush()
            drive(watcher, clock, lambda: watcher.state_of(store.uploads / key) == MODIFIED, step=0)
            began = clock()
            drive(watcher, clock, lambda: deliveries.seen, step=5.0)
            assert deliveries.seen[key][2] - began >= UNCLOSED
            assert looks.count(key, "still open") == 0
    finally:
        watcher.stop()


def test_a_closed_file_is_handed_on_two_short_looks_after_its_close(tmp_path: Path) -> None:
    """With the default quiet period: a close is final, so the file waits only for two looks that
    find it unchanged (a burst of uploads keeps the recorder busy from its first file on)."""
    store = FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")
    clock = FakeClock()
    watcher = DropFolderWatcher(
        store, Deliveries(clock), FolderDeadLetterQueue(tmp_path / "dead-letters"), clock=clock, settle_interval=None
    )
    path = store.uploads / "exp1" / "run1" / "model.bin"
    path.parent.mkdir(parents=True)
    watcher.start()
    try:
        assert watcher.wait_scanned(timeout=60)
        path.write_bytes(b"weights")
        deadline = time.monotonic() + 60
        while watcher.state_of(path) != "closed":  # the close event has reached the watcher
            assert time.monotonic() < deadline, "the close was never noticed"
            time.sleep(0.01)
        closed_at = clock()
        handed_on: list[Path] = []
        while path not in handed_on:
            assert clock() - closed_at < 1.0, "not handed on within a fake second"
            clock.advance(0.05)
            handed_on = watcher.settle_once()
    finally:
        watcher.stop()
    assert clock() - closed_at <= 0.1 + 1e-9


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (2, 2), (3, 3), (16, 4)])
def test_uploads_are_recorded_by_one_worker_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    """More record workers than cores only take turns at the GIL (bench/README.md has what four
    cost on two cores): one per core, two at least (a large file's digest does not hold up the
    rest), four at most."""
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    store = FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")
    release = threading.Event()
    inside: set[str] = set()
    most = 0
    lock = threading.Lock()

    def deliver(event: ObjectCreated) -> None:
        nonlocal most
        with lock:
            inside.add(threading.current_thread().name)
            most = max(most, len(inside))
        assert release.wait(60)
        with lock:
            inside.discard(threading.current_thread().name)

    clock = FakeClock()
    watcher = DropFolderWatcher(
        store, deliver, FolderDeadLetterQueue(tmp_path / "dead-letters"), clock=clock, settle_interval=None
    )
    earlier = {thread for thread in threading.enumerate() if thread.name.startswith("record")}
    watcher.start()
    try:
        assert watcher.wait_scanned(timeout=60)
        for index in range(8):
            path = store.uploads / "exp1" / f"run{index}" / "model.bin"
            path.parent.mkdir(parents=True)
            path.write_bytes(b"weights %d" % index)
        handed_on: list[Path] = []
        deadline = time.monotonic() + 60
        while len(handed_on) < 8:
            assert time.monotonic() < deadline, f"{len(handed_on)} of 8 uploads handed on"
            clock.advance(0.05)
            handed_on += watcher.settle_once()
            time.sleep(0.01)
        recorders = {thread for thread in threading.enumerate() if thread.name.startswith("record")} - earlier
        while len(inside) < workers:
            assert time.monotonic() < deadline, f"only {len(inside)} of {workers} workers began recording"
            time.sleep(0.01)
    finally:
        release.set()
        watcher.stop()
    assert len(recorders) == workers
    assert most == workers
