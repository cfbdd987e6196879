"""`modelrepo upload` of a folder and `modelrepo download` of a folder version, on a local root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from modelrepo.client import Client
from modelrepo.local.bootstrap import build_api
from modelrepo.settings import LocalSettings
from tests.local.test_cli import Cli, cli  # noqa: F401 - the CLI fixture

FILES = {
    "MLmodel": b"flavors:\n  python_function: {}\n",
    "data/weights.bin": os.urandom(64 * 1024),
    "data/nested/vocab.txt": "größe\n".encode() * 100,
    "requirements.txt": b"mlflow==3.17.2\n",
}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    for relative, data in FILES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def register_folder(root: Path, prefix: str = "model/") -> int:
    api = build_api(LocalSettings(root=root))
    try:
        return Client.in_process(api).register_folder("exp1", "run1", prefix, "alice").version
    finally:
        api.repository.metadata.close()


def test_a_folder_is_uploaded_file_by_file_and_downloaded_as_a_folder(
    cli: Cli,  # noqa: F811
    model_dir: Path,
    tmp_path: Path,
) -> None:
    uploaded = cli.json("upload", "exp1", "run1", str(model_dir))
    assert sorted(a["key"] for a in uploaded) == sorted(f"exp1/run1/model/{path}" for path in FILES)
    assert {a["name"]: a["sha256"] for a in uploaded} == {
        f"model/{path}": hashlib.sha256(data).hexdigest() for path, data in FILES.items()
    }
    assert contents(cli.root / "artifacts" / "exp1" / "run1" / "model") == FILES  # in the drop folder, whole
    assert sorted(a["name"] for a in cli.json("artifacts", "run1")) == sorted(f"model/{p}" for p in FILES)
    assert register_folder(cli.root) == 1

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    written = cli.json("download", "exp1", "1", str(downloads))
    assert written["path"] == str(downloads / "exp1-v1") and written["files"] == len(FILES)
    assert contents(downloads / "exp1-v1") == FILES
    code, _, err = cli("download", "exp1", "1", str(downloads))
    assert code == 1 and err.count("\n") == 1 and "exists; pass --force" in err
    (downloads / "exp1-v1" / "stale.txt").write_bytes(b"left from before")
    cli.json("download", "exp1", "1", str(downloads), "--force")
    assert contents(downloads / "exp1-v1") == FILES  # replaced whole, nothing stale left

    cli.json("deploy", "exp1", "1", "production", "--by", "carol")
    target = tmp_path / "serving" / "current"
    target.parent.mkdir()
    assert cli.json("download", "exp1", "@production", str(target))["path"] == str(target)
    assert contents(target) == FILES


def test_a_corrupt_pinned_file_fails_the_download_and_writes_nothing(
    cli: Cli,  # noqa: F811
    model_dir: Path,
    tmp_path: Path,
) -> None:
    cli.json("upload", "exp1", "run1", str(model_dir))
    register_folder(cli.root)
    digest = hashlib.sha256(FILES["data/weights.bin"]).hexdigest()
    pinned = cli.root / "registry" / "sha256" / digest[:2] / digest
    pinned.chmod(0o644)
    pinned.write_bytes(b"bit rot" + FILES["data/weights.bin"][7:])
    target = tmp_path / "out"
    code, _, err = cli("download", "exp1", "1", str(target))
    assert code == 1 and err.count("\n") == 1 and "sha256" in err
    assert not target.exists() and not list(tmp_path.glob(".out.download-*"))


@pytest.mark.parametrize(
    ("name", "problem"),
    [("back\\slash.bin", "backslash"), ("bidi\u202egnp.exe", "bidirectional control character")],
)
def test_a_folder_with_a_bad_name_uploads_nothing(
    cli: Cli,  # noqa: F811
    model_dir: Path,
    name: str,
    problem: str,
) -> None:
    (model_dir / "data" / name).write_bytes(b"x")
    code, _, err = cli("upload", "exp1", "run1", str(model_dir))
    assert code == 1 and err.count("\n") == 1 and problem in err and "nothing was uploaded" in err
    assert not (cli.root / "artifacts" / "exp1").exists()


def test_an_empty_folder_is_a_one_line_error(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, _, err = cli("upload", "exp1", "run1", str(tmp_path / "empty"))
    assert code == 1 and err.count("\n") == 1 and "holds no files" in err
