"""Files written into folders that are new to the watcher are recorded after the short quiet period."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.events import ObjectCreated
from modelrepo.local.watcher import DropFolderWatcher


def test_files_in_new_folders_do_not_wait_for_the_unclosed_quiet_period(tmp_path: Path) -> None:
    store = FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry")
    delivered: dict[str, float] = {}
    lock = threading.Lock()

    def deliver(event: ObjectCreated) -> None:
        with lock:
            delivered[event.key] = time.monotonic()

    # A long unclosed period: a closed file that is mistaken for an open one would wait 60 s.
    letters = FolderDeadLetterQueue(tmp_path / "dead-letters")
    watcher = DropFolderWatcher(store, deliver, letters, quiet_seconds=0.2, unclosed_quiet_seconds=60)
    watcher.start()
    try:
        time.sleep(0.3)
        began = time.monotonic()
        keys = [f"exp/run-{i:03d}/model.bin" for i in range(40)]
        for key in keys:
            path = store.uploads / key
            path.parent.mkdir(parents=True)  # a new folder: its watch is added after the file lands
            path.write_bytes(key.encode() * 1000)
        while len(delivered) < len(keys) and time.monotonic() - began < 20:
            time.sleep(0.05)
    finally:
        watcher.stop()
    assert sorted(delivered) == keys
    assert max(delivered.values()) - began < 10
