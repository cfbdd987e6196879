"""`modelrepo upload --profile` of a folder into S3 (moto): every file uploaded, recorded by the real
event path (S3 -> SQS -> the record function), registered as one folder version and downloaded
back as a folder through API Gateway (presigned S3 links per file)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from modelrepo.cli import main
from modelrepo.client import Client
from modelrepo.client.aws import SigV4Auth
from modelrepo.client.config import Profile, save_profile
from tests.aws.conftest import EventSourceMapping, Stack
from tests.aws.test_client_aws import STAGE, Gateway, cli_beside_the_trigger, gateway  # noqa: F401 - the gateway fixture
from tests.client.loopback import Loopback

FILES = {"MLmodel": b"flavors: {}\n", "data/weights.bin": os.urandom(300 * 1024), "data/vocab.txt": b"a\nb\n"}


def test_cli_uploads_a_folder_into_s3_and_downloads_the_folder_version(
    stack: Stack,
    trigger: EventSourceMapping,
    gateway: tuple[Loopback, Gateway],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    function_logs: io.StringIO,
) -> None:
    server, _ = gateway
    url = server.url + STAGE + "/api"
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    profile = Profile(url=url, auth="sigv4", region="us-east-1", uploads_bucket=stack.uploads_bucket)
    save_profile("aws", profile, environ)
    folder = tmp_path / "model"
    for relative, data in FILES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)

    args = ["upload", "exp1", "run-7", str(folder), "--profile", "aws", "--json", "--timeout", "120"]
    code = cli_beside_the_trigger(args, environ, trigger)
    out, err = capsys.readouterr()
    assert code == 0, err
    artifacts = printed_list(out)
    assert sorted(a["key"] for a in artifacts) == sorted(f"exp1/run-7/model/{path}" for path in FILES)

    with Client.over_http(url, SigV4Auth.for_url(url, region="us-east-1")) as client:
        assert client.register_folder("exp1", "run-7", "model/", "alice").version == 1
    target = tmp_path / "downloaded"
    assert main(["download", "exp1", "1", str(target), "--profile", "aws", "--json"], environ=environ) == 0
    capsys.readouterr()
    assert {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()} == FILES


def printed_list(out: str) -> Any:
    """The CLI's JSON list, after the metrics lines the functions print to stdout in-process."""
    lines = out.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "[")
    return json.loads("\n".join(lines[start:]))
