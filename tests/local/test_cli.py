"""The `modelrepo` command line on a local root: the five-minute tour, and clear failures."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from modelrepo.cli import main


class Cli:
    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--root", str(self.root)], environ={})
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "root", capsys)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(b"trained weights " * 1000)
    return path


def test_the_tour_upload_register_twice_deploy_download(cli: Cli, model_file: Path, tmp_path: Path) -> None:
    uploaded = cli.json("upload", "exp1", "run1", str(model_file))
    assert uploaded["key"] == "exp1/run1/model.bin"
    assert (cli.root / "artifacts" / "exp1" / "run1" / "model.bin").read_bytes() == model_file.read_bytes()
    [listed] = cli.json("artifacts", "run1")
    assert listed == uploaded

    first = cli.json("register", "exp1", uploaded["runArtifactId"], "--by", "alice", "--description", "baseline")
    second = cli.json("register", "exp1", uploaded["runArtifactId"], "--by", "bob")
    assert (first["version"], second["version"]) == (1, 2)
    assert [v["version"] for v in cli.json("versions", "exp1")] == [2, 1]
    assert cli.json("show", "exp1", "latest")["version"] == 2

    assert cli.json("deploy", "exp1", "1", "production", "--by", "carol")["version"] == 1
    assert cli.json("deploy", "exp1", "2", "production", "--by", "carol")["previousVersion"] == 1
    assert cli.json("rollback", "exp1", "production", "--by", "dave")["version"] == 1
    assert [(d["target"], d["version"]) for d in cli.json("deployments", "exp1")] == [("production", 1)]
    assert [d["version"] for d in cli.json("deployments", "exp1", "production")] == [1, 2, 1]

    model_file.write_bytes(b"something else")  # the source changes; registered bytes do not
    cli.json("upload", "exp1", "run1", str(model_file))
    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    downloaded = cli.json("download", "exp1", "1", str(out_dir))
    saved = Path(downloaded["path"])
    assert saved == out_dir / "model.bin"
    assert saved.read_bytes() == b"trained weights " * 1000
    assert downloaded["sha256"] == hashlib.sha256(saved.read_bytes()).hexdigest()

    tagged = cli.json("tag", "exp1", "1", "stage", "gold", "--by", "erin")
    assert tagged["tags"] == {"stage": "gold"}
    assert cli.json("untag", "exp1", "1", "stage", "--by", "erin")["tags"] == {}
    actions = [e["action"] for e in cli.json("audit", "exp1")]
    assert actions.count("model.registered") == 2 and actions.count("model.deployed") == 3


def test_tables_are_the_default_output(cli: Cli, model_file: Path) -> None:
    uploaded = cli.json("upload", "exp1", "run1", str(model_file))
    cli.json("register", "exp1", uploaded["runArtifactId"], "--by", "alice")
    code, out, _ = cli("versions", "exp1")
    assert code == 0
    assert "version" in out and "alice" in out and "model.bin" in out
    code, out, _ = cli("deployments", "exp1")
    assert (code, out.strip()) == (0, "(none)")


def test_the_same_idempotency_key_registers_once(cli: Cli, model_file: Path) -> None:
    uploaded = cli.json("upload", "exp1", "run1", str(model_file))
    args = ("register", "exp1", uploaded["runArtifactId"], "--by", "alice", "--idempotency-key", "job-42")
    assert cli.json(*args) == cli.json(*args)
    assert len(cli.json("versions", "exp1")) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("register", "exp1", "nope", "--by", "alice"), 2, "runArtifactId 'nope' is malformed (HTTP 400)"),
        (("show", "exp1", "3"), 1, "experiment 'exp1' has no version 3 (HTTP 404)"),
        (("show", "exp1", "three"), 2, "version 'three' is invalid"),
        (("deploy", "exp1", "x", "prod", "--by", "a"), 2, "version 'x' is invalid"),
        (("deploy", "exp1", "1", "Prod", "--by", "a"), 2, "target 'Prod' is invalid"),
        (("versions", "bad id"), 2, "experimentId 'bad id' is invalid"),
        (("rollback", "exp1", "production", "--by", "a"), 1, "nothing of experiment 'exp1' is deployed"),
        (("upload", "exp1", "run1", "/nonexistent/file.bin"), 1, "/nonexistent/file.bin is not a readable file"),
        (("download", "exp1", "1", "/tmp"), 1, "experiment 'exp1' has no version 1 (HTTP 404)"),
    ],
)
def test_errors_exit_non_zero_with_one_line(cli: Cli, args: tuple[str, ...], code: int, message: str) -> None:
    """Failures exit 1; bad arguments (also those the API answers 400) exit 2, argparse's usage code."""
    exit_code, out, err = cli(*args)
    assert exit_code == code
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("modelrepo: error: ")
    assert message in err


@pytest.mark.parametrize(
    ("name", "problem"),
    [("../escape.bin", "'..' path segment"), ("a\\b.bin", "backslash"), ("bell\x07", "control character")],
)
def test_upload_refuses_bad_names_and_writes_nothing(cli: Cli, model_file: Path, name: str, problem: str) -> None:
    code, _, err = cli("upload", "exp1", "run1", str(model_file), "--name", name)
    assert code == 2 and problem in err
    written = (
        [p for p in (cli.root / "artifacts").rglob("*") if p.is_file()] if (cli.root / "artifacts").exists() else []
    )
    assert written == []


def test_download_refuses_to_overwrite_without_force(cli: Cli, model_file: Path, tmp_path: Path) -> None:
    uploaded = cli.json("upload", "exp1", "run1", str(model_file))
    cli.json("register", "exp1", uploaded["runArtifactId"], "--by", "alice")
    target = tmp_path / "existing.bin"
    target.write_bytes(b"keep me")
    code, _, err = cli("download", "exp1", "1", str(target))
    assert code == 1 and "--force" in err
    assert target.read_bytes() == b"keep me"
    assert cli.json("download", "exp1", "1", str(target), "--force")["size"] == model_file.stat().st_size


def test_upload_with_url_is_refused(cli: Cli, model_file: Path) -> None:
    code, _, err = cli("upload", "exp1", "run1", str(model_file), "--url", "http://127.0.0.1:9")
    assert code == 1 and "without --url" in err


def test_unreachable_service_is_a_clear_error(cli: Cli) -> None:
    code, _, err = cli("versions", "exp1", "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err


def test_the_default_root_is_under_the_home_folder(tmp_path: Path) -> None:
    from modelrepo.settings import LocalSettings

    home = Path("~").expanduser()
    assert LocalSettings.from_environment({}).root == home / ".mlops" / "model-repository"
    assert LocalSettings.from_environment({"MODELREPO_ROOT": str(tmp_path)}).root == tmp_path
    assert LocalSettings.from_environment({"MODELREPO_ROOT": str(tmp_path)}, root="elsewhere").root.name == "elsewhere"


@pytest.mark.parametrize(
    "args",
    [
        ("deploy", "exp1", "²", "production", "--by", "a"),  # a digit, but not an ASCII one
        ("versions", "exp1", "--limit", "0"),
        ("versions", "exp1", "--limit", "1001"),
        ("audit", "exp1", "--limit", "many"),
        ("show", "exp1", "01"),
        ("tag", "exp1", "v1", "stage", "gold", "--by", "a"),
        ("download", "exp1", "-1", "/tmp"),
        ("reconcile", "--budget", "0"),
        ("reconcile", "--budget", "nan"),
        ("dead-letters", "--limit", "0"),
        ("serve", "--port", "70000"),
        ("deploy", "exp1", "1"),
        ("no-such-command",),
    ],
)
def test_every_bad_argument_gets_one_line_and_exit_code_2(cli: Cli, args: tuple[str, ...]) -> None:
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("modelrepo: error: "), err


@pytest.fixture
def registered(cli: Cli, model_file: Path) -> bytes:
    uploaded = cli.json("upload", "exp1", "run1", str(model_file))
    cli.json("register", "exp1", uploaded["runArtifactId"], "--by", "alice")
    return model_file.read_bytes()


def test_download_writes_through_no_link_planted_at_a_temporary_name(
    cli: Cli, registered: bytes, tmp_path: Path
) -> None:
    out_dir = tmp_path / "downloads"
    out_dir.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    planted = out_dir / f".model.bin.download-{os.getpid()}"  # the name a download used to write to
    planted.symlink_to(victim)
    downloaded = cli.json("download", "exp1", "1", str(out_dir))
    assert victim.read_bytes() == b"precious"
    assert Path(downloaded["path"]).read_bytes() == registered
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([planted.name, "model.bin"])  # no leftovers


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink"])
def test_download_never_replaces_anything_but_a_regular_file(
    cli: Cli, registered: bytes, tmp_path: Path, kind: str
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    target = tmp_path / f"{kind}.bin"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    else:
        target.symlink_to(victim)
    before = os.lstat(target)
    code, out, err = cli("download", "exp1", "1", str(target), "--force")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "DEST must be a regular file or a folder" in err
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert victim.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".modelrepo-download-")] == []
