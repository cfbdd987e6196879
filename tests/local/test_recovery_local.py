"""Local recovery: the watcher parks what keeps failing; the CLI lists, replays and reconciles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelrepo.adapters.folder import FolderArtifactStore, FolderDeadLetterQueue
from modelrepo.cli import main
from modelrepo.events import ObjectCreated
from modelrepo.local.watcher import DropFolderWatcher
from tests.local.conftest import wait_for


def cli_json(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main([*args, "--root", str(root), "--json"], environ={})
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_an_upload_that_keeps_failing_is_parked_then_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    store = FolderArtifactStore(root / "artifacts", root / "registry")
    letters = FolderDeadLetterQueue(root / "dead-letters")
    attempts: list[str] = []

    def broken(event: ObjectCreated) -> None:
        attempts.append(event.key)
        raise OSError("disk full")

    watcher = DropFolderWatcher(store, broken, letters, attempts=3, retry_seconds=0.05)
    watcher.start()
    try:
        path = root / "artifacts" / "exp1" / "run1" / "model.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"weights")
        [letter] = wait_for(letters.peek, timeout=5)
    finally:
        watcher.stop()
    assert attempts == ["exp1/run1/model.bin"] * 3  # bounded attempts, then parked
    assert letter.events[0].key == "exp1/run1/model.bin"
    assert "disk full" in letter.detail

    listed = cli_json(root, capsys, "dead-letters")
    assert [(d["handle"], d["keys"]) for d in listed] == [(letter.handle, ["exp1/run1/model.bin"])]
    replayed = cli_json(root, capsys, "replay")
    assert [(r["replayed"], r["outcomes"]) for r in replayed] == [(True, ["recorded"])]
    assert cli_json(root, capsys, "dead-letters") == []
    assert [a["name"] for a in cli_json(root, capsys, "artifacts", "run1")] == ["model.bin"]


def test_reconcile_records_what_nobody_watched_and_flags_what_vanished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    cli_json(root, capsys, "upload", "exp1", "run1", str(model))
    # Files copied in while no watcher ran: the events were never handled.
    unwatched = root / "artifacts" / "exp1" / "run2" / "late.bin"
    unwatched.parent.mkdir(parents=True)
    unwatched.write_bytes(b"late")
    (root / "artifacts" / "exp1" / "run1" / "model.bin").unlink()

    report = cli_json(root, capsys, "reconcile")
    assert report == {
        "objectsScanned": 1,
        "recorded": 1,
        "rejected": 0,
        "runsChecked": 2,
        "vanished": 1,
        "indexed": 0,  # runs' events are not the index's: each upload listed its experiment itself
        "released": 0,
        "complete": True,
    }
    [late] = cli_json(root, capsys, "artifacts", "run2")
    assert late["name"] == "late.bin"
    [gone] = cli_json(root, capsys, "artifacts", "run1")
    assert gone["vanishedAt"] is not None
    assert [e["experimentId"] for e in cli_json(root, capsys, "experiments")] == ["exp1"]
    assert cli_json(root, capsys, "reconcile")["recorded"] == 0


def test_operator_commands_refuse_a_url_and_unknown_backends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["reconcile", "--root", str(tmp_path), "--url", "http://127.0.0.1:9"], environ={})
    assert code == 1 and "--backend, not --url" in capsys.readouterr().err
    assert main(["reconcile", "--backend", "gcp"], environ={}) == 2
    assert "invalid choice: 'gcp'" in capsys.readouterr().err
