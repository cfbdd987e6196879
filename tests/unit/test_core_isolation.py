"""The core runs with no network and no cloud SDK: checked in a fresh interpreter where both are cut off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a clean interpreter: cloud SDKs cannot be imported (as if not installed) and no socket
# can connect. Then it exercises every core rule on the fakes and on the embedded adapters.
SCENARIO = textwrap.dedent(
    """
    import importlib.abc, io, socket, sys, tempfile, threading
    from pathlib import Path

    BLOCKED = ("boto3", "botocore", "azure", "aws_lambda_powertools", "moto", "requests", "urllib3", "httpx", "tomli_w")

    class NoCloud(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not installed here", name=name)
            return None

    sys.meta_path.insert(0, NoCloud())

    def no_network(*args, **kwargs):
        raise OSError("network is cut off in this test")

    socket.socket.connect = no_network
    socket.create_connection = no_network

    try:
        import boto3  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker does not work")

    import modelrepo, modelrepo.api, modelrepo.cli, modelrepo.client, modelrepo.service, modelrepo.settings
    from modelrepo import Client
    from modelrepo.adapters.folder import FolderArtifactStore
    from modelrepo.adapters.memory import MemoryArtifactStore, MemoryMetadataStore
    from modelrepo.adapters.sqlite import SqliteMetadataStore
    from modelrepo.api import Api, Request
    from modelrepo.events import ObjectCreated
    from modelrepo.service import ModelRepository, Outcome

    def exercise(repo):
        info = repo.artifacts.put("exp1/run1/model.bin", io.BytesIO(b"weights"))
        event = ObjectCreated.from_object(info, "isolation-test")
        outcomes = [repo.record_artifact(event).outcome for _ in range(10)]
        assert outcomes.count(Outcome.RECORDED) == 1, outcomes
        [artifact] = repo.list_run_artifacts("run1")
        got = []
        threads = [threading.Thread(target=lambda: got.append(
            repo.register_model("exp1", artifact.run_artifact_id, "alice").version)) for _ in range(16)]
        [t.start() for t in threads]; [t.join() for t in threads]
        assert sorted(got) == list(range(1, 17)), got
        repo.deploy("exp1", 3, "production", "carol")
        api = Api(repo)
        response = api.handle(Request("GET", "/api/experiments/exp1/models", {"limit": "5"}))
        assert response.status == 200 and len(response.json()["items"]) == 5
        client = Client.in_process(api)  # the CLI's way to a local root: no HTTP library, no socket
        assert [m.version for m in client.models("exp1", page_size=5)] == list(range(16, 0, -1))

    exercise(ModelRepository(MemoryArtifactStore(), MemoryMetadataStore()))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        exercise(ModelRepository(FolderArtifactStore(root / "a", root / "r"), SqliteMetadataStore(root / "m.db")))

    leaked = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("core ran with no cloud SDK and no network")
    """
)


def test_the_core_needs_no_cloud_sdk_and_no_network() -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-c", SCENARIO],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "core ran with no cloud SDK and no network" in result.stdout


def test_core_modules_name_no_cloud_sdk() -> None:
    """Belt and braces: no core module even mentions a cloud SDK import."""
    core = REPO / "shared" / "modelrepo"
    # The adapters, and the client's cloud side (SigV4, uploads), import their SDK; nothing else does.
    cloud_adapters = {core / sub / f"{cloud}.py" for sub in ("adapters", "client") for cloud in ("aws", "azure")}
    offenders = []
    for path in core.rglob("*.py"):
        if path in cloud_adapters:
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")) and any(
                sdk in stripped for sdk in ("boto3", "botocore", "azure", "aws_lambda_powertools")
            ):
                offenders.append(f"{path.relative_to(REPO)}: {stripped}")
    assert offenders == []
