"""`modelrepo serve` against a hostile drop folder: links and special files, old file times,
writers that pause with the file open, and what crashed writers leave behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelrepo.cli import main
from tests.local.conftest import Served, start_serve, stop_serve, wait_for

SECRET = b"MODELREPO_API_KEY=never-leaves-this-file\n"
HOUR_NS = 3600 * 10**9


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifacts_of(served: Served, run: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = served.request("GET", f"/api/runs/{run}/artifacts").json()["items"]
    return items


def rejections_of(served: Served) -> dict[str, str]:
    items = served.request("GET", "/api/rejections?limit=1000").json()["items"]
    return {r["key"]: r["reason"] for r in items}


def cli_json(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main([*args, "--root", str(root), "--json"], environ={})
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_links_and_special_files_become_rejections_and_nothing_outside_the_root_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    (secret.parent / "run9").mkdir()
    (secret.parent / "run9" / "model.bin").write_bytes(SECRET)
    root = tmp_path / "root"
    run1 = root / "artifacts" / "exp1" / "run1"
    run1.mkdir(parents=True)
    # Found by the start-up scan:
    (run1 / "environ").symlink_to("/proc/self/environ")
    os.mkfifo(run1 / "pipe")
    (root / "artifacts" / "exp2").symlink_to(secret.parent, target_is_directory=True)
    served = start_serve(root)
    try:
        # Seen by the events:
        (run1 / "secret.bin").symlink_to(secret)
        os.link(secret, run1 / "hardlinked.bin")
        (run1 / ".modelrepo-tmp-mine.bin").write_bytes(b"a user's file named like one of ours")
        expected = {
            "exp1/run1/environ": "symbolic link",
            "exp1/run1/pipe": "FIFO",
            "exp2": "symbolic link",
            "exp1/run1/secret.bin": "symbolic link",
            "exp1/run1/hardlinked.bin": "2 hard links",
            "exp1/run1/.modelrepo-tmp-mine.bin": "reserved for modelrepo's temporary files",
        }
        reasons = wait_for(lambda: (r := rejections_of(served)) and expected.keys() <= r.keys() and r, timeout=60)
        for key, words in expected.items():
            assert words in reasons[key], (key, reasons[key])
        assert artifacts_of(served, "run1") == []
        assert artifacts_of(served, "run9") == []
        published = served.request("GET", "/api/rejections?limit=1000").body
        assert sha(SECRET).encode() not in published and b"never-leaves" not in published
    finally:
        stop_serve(served)
    assert secret.read_bytes() == SECRET


def move_in(root: Path, key: str, data: bytes, mtime_ns: int) -> None:
    """What `cp -p` of an older file, or `mv` of a file prepared earlier, does: the bytes arrive
    complete, with a file time older than (or equal to) the version they replace."""
    staged = root / "staging" / "next.bin"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(data)
    os.utime(staged, ns=(mtime_ns, mtime_ns))
    target = root / "artifacts" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)


def current(served: Served) -> str | None:
    found = [a for a in artifacts_of(served, "run1") if a["name"] == "model.bin"]
    return str(found[0]["sha256"]) if found else None


def test_the_last_write_of_a_path_is_current_whatever_its_mtime_also_after_a_restart_and_by_reconcile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    key = "exp1/run1/model.bin"
    served = start_serve(root)
    try:
        served.drop(key, b"v1")
        wait_for(lambda: current(served) == sha(b"v1"), timeout=30)
        first_mtime = os.stat(root / "artifacts" / key).st_mtime_ns
        move_in(root, key, b"v2, an older file time", first_mtime - HOUR_NS)
        wait_for(lambda: current(served) == sha(b"v2, an older file time"), timeout=30)
        move_in(root, key, b"v3, the same file time", first_mtime - HOUR_NS)
        wait_for(lambda: current(served) == sha(b"v3, the same file time"), timeout=30)

        [artifact] = artifacts_of(served, "run1")
        body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
        assert served.request("POST", "/api/register", body).status == 201
        assert served.request("GET", "/api/experiments/exp1/models/1/download").body == b"v3, the same file time"

        move_in(root, key, b"v1", first_mtime - 2 * HOUR_NS)  # older bytes uploaded again: current again
        wait_for(lambda: current(served) == sha(b"v1"), timeout=30)
    finally:
        stop_serve(served)

    move_in(root, key, b"v4, while nothing watched", first_mtime - 3 * HOUR_NS)
    served = start_serve(root)
    try:
        wait_for(lambda: current(served) == sha(b"v4, while nothing watched"), timeout=30)  # the start-up scan
    finally:
        stop_serve(served)

    move_in(root, key, b"v5, found by reconcile", first_mtime - 4 * HOUR_NS)
    assert cli_json(root, capsys, "reconcile")["recorded"] == 1
    [listed] = cli_json(root, capsys, "artifacts", "run1")
    assert listed["sha256"] == sha(b"v5, found by reconcile")


def test_a_half_written_file_is_not_recorded_while_its_writer_keeps_it_open(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    path = served.root / "artifacts" / "exp1" / "run1" / "model.bin"
    path.parent.mkdir(parents=True)
    whole = os.urandom(64 * 1024) + b"--the end"
    with path.open("wb") as writer:
        writer.write(whole[:1000])
        writer.flush()
        # The writer pauses far beyond every quiet period; the watcher says it looked and waits.
        wait_for(lambda: any("exp1/run1/model.bin is still open for writing" in line for line in served.log), 60)
        assert artifacts_of(served, "run1") == []
        swept = cli_json(served.root, capsys, "reconcile")  # nor does a sweep beside it record it
        assert (swept["objectsScanned"], swept["recorded"]) == (0, 0)
        assert artifacts_of(served, "run1") == []
        writer.write(whole[1000:])
    [artifact] = wait_for(lambda: artifacts_of(served, "run1"), timeout=60)
    assert (artifact["size"], artifact["sha256"]) == (len(whole), sha(whole))


PINNING_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from modelrepo.adapters.folder import FolderArtifactStore, _folder

    root = Path(sys.argv[1])
    store = FolderArtifactStore(root / "artifacts", root / "registry")
    # What pinning does, fed from a pipe the test holds open: the copy stops midway, as a crash finds it.
    with _folder(str(root / "registry"), ["sha256", "ab"], create=True) as folder:
        store._write_atomically(sys.stdin.buffer, folder, "ab" + "0" * 62, None, 0o444, "the registry")
    """
)


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".modelrepo-tmp-*") if "artifacts" not in p.parts)


def test_temp_files_of_crashed_writers_are_removed_at_start_and_by_reconcile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "registry" / "sha256" / "ab").mkdir(parents=True)
    (root / "dead-letters").mkdir()
    # What a crash midway through pinning a large file, and through parking a dead letter, leaves.
    (root / "registry" / "sha256" / "ab" / ".modelrepo-tmp-0123456789ab").write_bytes(b"x" * (1 << 20))
    (root / "dead-letters" / ".modelrepo-tmp-0123456789ab.json").write_bytes(b'{"event": ')
    served = start_serve(root)  # start-up removes them
    try:
        assert temp_files(root) == []
    finally:
        stop_serve(served)

    (root / "registry" / "sha256" / "cd").mkdir()
    (root / "registry" / "sha256" / "cd" / ".modelrepo-tmp-ba9876543210").write_bytes(b"partial")
    cli_json(root, capsys, "reconcile")  # and so does a sweep
    assert temp_files(root) == []


def test_a_live_writers_temp_file_is_never_taken_for_a_crashed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    writer = subprocess.Popen([sys.executable, "-c", PINNING_WRITER, str(root)], stdin=subprocess.PIPE)
    try:
        assert writer.stdin is not None
        writer.stdin.write(b"x" * (1 << 20))
        writer.stdin.flush()
        [live] = wait_for(lambda: [p for p in temp_files(root) if p.stat().st_size >= 1 << 20], timeout=60)
        cli_json(root, capsys, "reconcile")
        served = start_serve(root)
        stop_serve(served)
        assert temp_files(root) == [live]  # its writer holds its lock: neither sweep touched it
        writer.send_signal(signal.SIGKILL)  # now it crashes
        writer.wait(timeout=60)
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdin is not None
        writer.stdin.close()
    cli_json(root, capsys, "reconcile")
    assert temp_files(root) == []
