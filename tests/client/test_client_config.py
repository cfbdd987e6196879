"""Profiles: `modelrepo configure`, the config file, environment overrides, and the CLI on a profile
(here against a real `modelrepo serve` with an API key)."""

from __future__ import annotations

import io
import json
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelrepo.cli import main
from modelrepo.client import NotConfigured
from modelrepo.client.config import config_path, load_profile, resolve
from tests.local.conftest import Served, start_serve, stop_serve, wait_for

API_KEY = "serve-api-key-3e8d1f"
OUTPUTS = {
    "functionAppName": {"type": "String", "value": "modelrepo-abc123"},
    "apiBaseUrl": {"type": "String", "value": "https://modelrepo-abc123.azurewebsites.net/api"},
    "storageAccountName": {"type": "String", "value": "modelrepoabc123"},
    "uploadsContainer": {"type": "String", "value": "uploads"},
}


class Cli:
    def __init__(self, environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
        self.environ = environ
        self.capsys = capsys

    def __call__(self, *args: str, **extra: str) -> tuple[int, str, str]:
        code = main(list(args), environ={**self.environ, **extra})
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str, **extra: str) -> Any:
        code, out, err = self(*args, "--json", **extra)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def cli(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(
        {"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "MODELREPO_ROOT": str(tmp_path / "local")},
        capsys,
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root", api_key=API_KEY)
    yield running
    stop_serve(running)


def test_configure_local_writes_a_private_profile_the_cli_then_uses(cli: Cli, served: Served, tmp_path: Path) -> None:
    written = cli.json("configure", "local", "--url", served.url, "--profile", "lab", MODELREPO_API_KEY=API_KEY)
    path = tmp_path / "xdg" / "modelrepo" / "config.toml"
    assert written == {
        "profile": "lab",
        "path": str(path),
        "url": served.url,
        "auth": "bearer",
        "api_key": "**********",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tomllib.loads(path.read_text())["profiles"]["lab"] == {
        "url": served.url,
        "auth": "bearer",
        "api_key": API_KEY,
    }

    served.drop("exp1/run1/model.bin", b"weights from the lab")
    assert cli.json("artifacts", "run1") == []  # no profile: the local root (MODELREPO_ROOT), not the service
    [artifact] = wait_for(lambda: cli.json("artifacts", "run1", "--profile", "lab"), timeout=10)
    model = cli.json("register", "exp1", artifact["runArtifactId"], "--by", "alice", MODELREPO_PROFILE="lab")
    assert model["version"] == 1
    assert [v["version"] for v in cli.json("versions", "exp1", "--profile", "lab")] == [1]
    code, _, err = cli("versions", "exp1", "--profile", "lab", MODELREPO_API_KEY="a-wrong-key-000")
    assert code == 1 and "(HTTP 401)" in err and "a-wrong-key-000" not in err


def test_configure_azure_reads_the_bicep_outputs_from_a_file_or_stdin(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    written = cli.json("configure", "azure", "--outputs", str(outputs), MODELREPO_FUNCTION_KEY="fn-key-0a1b2c")
    assert written == {
        "profile": "azure",
        "path": written["path"],
        "url": "https://modelrepo-abc123.azurewebsites.net/api",
        "auth": "function-key",
        "function_key": "**********",
        "function_app": "modelrepo-abc123",
        "storage_account": "modelrepoabc123",
        "uploads_container": "uploads",
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(OUTPUTS)))
    entra = cli.json("configure", "azure", "--outputs", "-", "--entra-app-id", "6f9e-app", "--profile", "prod")
    assert (entra["auth"], entra["app_id"]) == ("entra", "6f9e-app")
    profile = load_profile("prod", cli.environ)
    assert profile.cloud == "azure" and profile.scope is None and profile.function_key is None

    monkeypatch.setattr("sys.stdin", io.StringIO("fn-key-from-stdin\n"))
    cli.json("configure", "azure", "--outputs", str(outputs), "--key-stdin", "--profile", "keyed")
    assert load_profile("keyed", cli.environ).function_key.get_secret_value() == "fn-key-from-stdin"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        (("configure", "azure", "--outputs", "{missing}"), {"MODELREPO_FUNCTION_KEY": "k"}, "cannot read"),
        (("configure", "azure", "--outputs", "{bad}"), {"MODELREPO_FUNCTION_KEY": "k"}, "lack storageAccountName"),
        (("configure", "azure", "--outputs", "{good}"), {}, "give the function key"),
        (("configure", "local"), {}, "needs the service's --url"),
        (("configure", "local", "--url", "ftp://host"), {}, "is not an http:// or https:// URL"),
        (("versions", "exp1", "--profile", "nope"), {}, "no profile 'nope'"),
        (("versions", "exp1", "--profile", "../x"), {}, "profile name '../x' is invalid"),
        (("upload", "exp1", "run1", "{good}", "--profile", "plain"), {}, "names no uploads bucket"),
    ],
)
def test_profile_mistakes_are_one_line_errors(
    cli: Cli, tmp_path: Path, args: tuple[str, ...], environ: dict[str, str], message: str
) -> None:
    (tmp_path / "good.json").write_text(json.dumps(OUTPUTS))
    (tmp_path / "bad.json").write_text(json.dumps({"apiBaseUrl": "https://x/api", "uploadsContainer": "u"}))
    files = {
        "missing": str(tmp_path / "missing.json"),
        "bad": str(tmp_path / "bad.json"),
        "good": str(tmp_path / "good.json"),
    }
    cli.json("configure", "local", "--url", "http://127.0.0.1:9", "--profile", "plain")
    code, out, err = cli(*(a.format(**files) for a in args), **environ)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("modelrepo: error: ") and message in err, err


def test_the_file_follows_xdg_and_the_environment_overrides_it(home: Path, tmp_path: Path) -> None:
    assert config_path({"HOME": str(home)}) == home / ".config" / "modelrepo" / "config.toml"
    assert config_path({"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "modelrepo" / "config.toml"
    assert (
        config_path({"HOME": str(home), "XDG_CONFIG_HOME": "relative"})
        == home / ".config" / "modelrepo" / "config.toml"
    )
    environ = {"HOME": str(home)}
    path = config_path(environ)
    path.parent.mkdir(parents=True)
    path.write_text(
        '[profiles.aws]\nurl = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/api"\nauth = "sigv4"\n'
    )
    assert load_profile("aws", environ).url.startswith("https://abc.execute-api")
    moved = load_profile("aws", {**environ, "MODELREPO_URL": "https://other.example/prod/api"})
    assert (moved.url, moved.auth) == ("https://other.example/prod/api", "sigv4")
    assert resolve({**environ, "MODELREPO_PROFILE": "aws"}, profile=None, url=None, api_key=None) is not None
    assert resolve(environ, profile=None, url=None, api_key=None) is None  # no profile, no URL: the local root
    bare = resolve(environ, profile=None, url="http://127.0.0.1:7071", api_key="k" * 12)
    assert bare is not None and bare.auth == "bearer"
    path.write_text("[profiles.aws\nurl = 1")
    with pytest.raises(NotConfigured, match="not valid TOML"):
        load_profile("aws", environ)
