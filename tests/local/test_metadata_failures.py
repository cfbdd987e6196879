"""A broken metadata database: at start-up one clear line and a non-zero exit; at request time a
503 problem naming the store; a lost database is never silently replaced by an empty one; and
`modelrepo check` reports the database's integrity and every pinned file's digest."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrepo.adapters.sqlite import SqliteMetadataStore
from modelrepo.cli import main
from modelrepo.errors import StoreUnavailable
from modelrepo.ports import Put
from tests.local.conftest import Served, run_modelrepo, start_serve, stop_serve, wait_for

WEIGHTS = b"trained weights " * 1000


def cli(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--root", str(root)], environ={})
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = cli(root, capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def populate(root: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A root with one registered version (so the registry holds pinned bytes)."""
    source = root.parent / "model.bin"
    source.write_bytes(WEIGHTS)
    uploaded = cli_json(root, capsys, "upload", "exp1", "run1", str(source))
    model: dict[str, Any] = cli_json(root, capsys, "register", "exp1", uploaded["runArtifactId"], "--by", "alice")
    return model


def database_files(root: Path) -> list[Path]:
    return [root / f"metadata.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelrepo: error: "), result.stderr
    return lines[0]


def serve_fails(root: Path, *extra: str) -> str:
    return one_line_failure(run_modelrepo("serve", "--root", str(root), "--port", "0", *extra))


def test_a_corrupt_database_stops_the_start_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    populate(root, capsys)
    for path in database_files(root)[1:]:
        path.unlink(missing_ok=True)
    (root / "metadata.sqlite3").write_bytes(b"this is not a database " * 500)
    line = serve_fails(root)
    assert f"the metadata database {root / 'metadata.sqlite3'} is not a usable SQLite database" in line
    code, _, err = cli(root, capsys, "versions", "exp1")
    assert code == 1 and err.count("\n") == 1 and "is not a usable SQLite database" in err


def test_a_corrupt_drop_folder_ledger_stops_the_start_and_may_simply_be_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    populate(root, capsys)
    ledger = root / "drop-folder.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    ledger.write_bytes(b"not a database either " * 500)
    line = serve_fails(root)
    assert f"the drop folder's ledger {ledger} is not a usable SQLite database" in line and "delete it" in line
    ledger.unlink()
    served = start_serve(root)
    try:
        assert [m["version"] for m in served.request("GET", "/api/experiments/exp1/models").json()["items"]] == [1]
    finally:
        stop_serve(served)


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Files made immutable (`chattr +i`: not even root may write them), made mutable again after."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_an_immutable_database_stops_the_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], immutable: list[Path]
) -> None:
    root = tmp_path / "root"
    populate(root, capsys)
    database = root / "metadata.sqlite3"
    subprocess.run(["chattr", "+i", str(database)], check=True)
    immutable.append(database)
    line = serve_fails(root)
    assert f"the metadata database {database}" in line


def test_a_read_only_file_system_stops_the_start_with_one_line(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = small_disk / "root"
    populate(root, capsys)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        line = serve_fails(root)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert f"the metadata database {root / 'metadata.sqlite3'}" in line


def test_a_missing_database_beside_pinned_bytes_is_not_replaced_unless_told_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    populate(root, capsys)
    for path in database_files(root):
        path.unlink(missing_ok=True)
    line = serve_fails(root)
    assert "metadata.sqlite3 is missing" in line and "--init" in line
    code, _, err = cli(root, capsys, "versions", "exp1")
    assert code == 1 and "is missing" in err
    assert not (root / "metadata.sqlite3").exists()  # refusing created nothing

    served = start_serve(root, "--init")  # told to: a new, empty database
    try:
        assert served.request("GET", "/api/experiments/exp1/models").json()["items"] == []
    finally:
        stop_serve(served)


def register(served: Served) -> int:
    [artifact] = wait_for(lambda: served.request("GET", "/api/runs/run1/artifacts").json()["items"], timeout=60)
    body = {"experimentId": "exp1", "runArtifactId": artifact["runArtifactId"], "registeredBy": "alice"}
    return served.request("POST", "/api/register", body).status


def assert_store_unavailable(served: Served, status_and_detail: tuple[int, str]) -> None:
    status, detail = status_and_detail
    assert status == 503, (status, detail)
    assert f"the metadata database {served.root / 'metadata.sqlite3'}" in detail, detail


def tag(served: Served) -> tuple[int, str]:
    answer = served.request("PUT", "/api/experiments/exp1/models/1/tags/stage", {"value": "gold", "by": "carol"})
    return answer.status, answer.json().get("detail", "")


def test_a_database_deleted_while_serving_answers_503_instead_of_losing_writes(served: Served) -> None:
    served.drop("exp1/run1/model.bin", WEIGHTS)
    assert register(served) == 201
    for path in database_files(served.root):
        path.unlink(missing_ok=True)
    status, detail = tag(served)
    assert_store_unavailable(served, (status, detail))
    assert "deleted or replaced" in detail
    wait_for(lambda: any("store unavailable" in line for line in served.log), timeout=60)  # the server says so


def test_a_new_connection_never_creates_a_deleted_database_anew(tmp_path: Path) -> None:
    """The served test above reaches a new connection or an idle one depending on which threads
    hold the pool; here a connection is held so the read must open a new one, which once created an
    empty database and answered 'no such table'. Nothing may be created, and the answer says why."""
    store = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
    store.transact([Put("exp~e", "row", {"n": 1})])
    for path in database_files(tmp_path):
        path.unlink(missing_ok=True)
    # One connection held busy: the read needs a connection of its own.
    with store._connection(), pytest.raises(StoreUnavailable, match="deleted or replaced"):
        store.get("exp~e", "row")
    assert not (tmp_path / "metadata.sqlite3").exists()
    store.close()


def test_a_database_made_immutable_while_serving_answers_503_naming_it(served: Served, immutable: list[Path]) -> None:
    """Immutable rather than read-only: Linux refuses to remount a file system read-only while a
    process holds a file on it open for writing, as the server does; `chattr +i` takes effect on
    open files too."""
    served.drop("exp1/run1/model.bin", WEIGHTS)
    assert register(served) == 201
    for path in database_files(served.root)[:2]:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        immutable.append(path)
    assert_store_unavailable(served, tag(served))
    for path in immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert tag(served)[0] == 200  # and it works again once the files do


def test_check_reports_the_database_and_every_pinned_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    model = populate(root, capsys)
    report = cli_json(root, capsys, "check")
    assert report == {
        "database": "ok",
        "pinnedFiles": 1,
        "pinnedBad": 0,
        "problems": [],
        "staleTempFiles": 0,
        "ok": True,
    }
    code, out, _ = cli(root, capsys, "check")
    assert code == 0 and "pinned files" in out

    pinned = root / "registry" / "sha256" / model["sha256"][:2] / model["sha256"]
    pinned.chmod(0o644)
    pinned.write_bytes(b"bit rot")
    code, out, _ = cli(root, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 1 and (report["pinnedFiles"], report["pinnedBad"], report["ok"]) == (1, 1, False)
    assert report["problems"] == [
        f"{pinned}: its bytes have sha256 {hashlib.sha256(b'bit rot').hexdigest()}, not the one it is named by"
    ]

    for path in database_files(root)[1:]:
        path.unlink(missing_ok=True)
    with (root / "metadata.sqlite3").open("r+b") as database:
        database.seek(4096)  # past the header: the file still opens, its pages are garbage
        database.write(os.urandom(8192))
    code, out, err = cli(root, capsys, "check", "--json")
    report = json.loads(out)
    assert code == 1 and err == ""
    assert report["database"] != "ok" and not report["ok"]
