"""MLflow's own client against modelrepo: its side runs in .venv-mlflow (tests/mlflow/mlflow_side.py),
these fixtures start the hosts, drop the model folder into their buckets and judge what it saw."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.client.loopback import Answer, Wire

REPO = Path(__file__).resolve().parents[2]
MLFLOW_PYTHON = REPO / ".venv-mlflow" / "bin" / "python"
SIDE = Path(__file__).with_name("mlflow_side.py")
NAME, BURST, RUN = "churn", "churn-burst", "run-1"
LOST_ANSWER = b'"lost-answer"'


def _mlflow(arguments: list[str], cwd: Path, environment: dict[str, str]) -> str:
    assert MLFLOW_PYTHON.exists(), "the MLflow virtualenv is missing: run `make mlflow-setup`"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELREPO_", "AWS_", "AZURE_"))}
    env.update(environment)
    done = subprocess.run(
        [str(MLFLOW_PYTHON), str(SIDE), *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python_function model folder (MLmodel, python_model.pkl, ...) saved by MLflow itself."""
    work = tmp_path_factory.mktemp("mlflow-model")
    _mlflow(["save-model", str(work / "model")], work, {})
    return work / "model"


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def digests(files: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}


def run_scenario(
    tmp_path: Path,
    registry_uri: str,
    sources: tuple[str, str],
    environment: dict[str, str],
    *,
    search_index: bool = False,
) -> dict[str, Any]:
    """MLflow's client through the scenario of mlflow_side.py; what it observed."""
    config = {
        "registry_uri": registry_uri,
        "name": NAME,
        "source": sources[0],
        "run_id": RUN,
        "burst_name": BURST,
        "burst_source": sources[1],
        "download_to": str(tmp_path / "downloaded"),
        "search_index": search_index,
    }
    (tmp_path / "downloaded").mkdir()
    (tmp_path / "scenario.json").write_text(json.dumps(config))
    environment = {
        "MLFLOW_REGISTRY_URI": registry_uri,
        "MLFLOW_TRACKING_URI": registry_uri,  # nothing here tracks runs: no tracking call may be made
        **environment,
    }
    out = _mlflow(["run", str(tmp_path / "scenario.json")], tmp_path, environment)
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def check_report(report: dict[str, Any], model: dict[str, bytes], *, search_index: bool = False) -> None:
    """What MLflow's client must have seen on every host."""
    assert report["created"] == {"name": NAME, "tags": {"team": "ml"}, "description": "churn, by MLflow"}
    assert report["create_again"] == "RESOURCE_ALREADY_EXISTS"
    assert report["first"] == {"version": "1", "status": "READY", "tags": {"stage": "candidate"}, "run_id": RUN}
    assert report["same_request_again"] == "1"  # the same request within the window: the same version
    assert report["lost_answer"] == "2"  # sent twice by the client (its answer lost once): one version
    assert report["alias"] == "1" and report["model_aliases"] == {"champion": "1"}
    assert report["downloaded"] == digests(model) and report["meta_added"]  # the folder, byte for byte
    assert report["predicted"] == [2.0, 5.0]
    assert report["alias_after_delete"] == "RESOURCE_DOES_NOT_EXIST"
    assert report["by_name"] == [1, 2]
    assert report["by_name_and_tag"] == [1]
    if search_index:
        assert report["by_tag"] == [[NAME, 1]]
    assert report["bad_name"] == "INVALID_PARAMETER_VALUE"
    assert report["bad_alias"] == "INVALID_PARAMETER_VALUE"
    assert report["outside_bucket"] == "INVALID_PARAMETER_VALUE"
    assert report["missing_version"] == "RESOURCE_DOES_NOT_EXIST"
    assert report["burst_failures"] == []
    assert report["burst"] == list(range(1, 17))  # 16 concurrent creates: exactly 1..16


@dataclass
class LosesOneAnswer:
    """A front that hands the first create marked `lost-answer` on, then answers 503 as if the
    answer was lost on the way back (MLflow's client retries it, sending no request token)."""

    handle: Callable[[Wire], Answer]
    forwarded: list[Wire] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, wire: Wire) -> Answer:
        answer = self.handle(wire)
        if wire.path.endswith("/api/2.0/mlflow/model-versions/create") and LOST_ANSWER in wire.body:
            with self._lock:
                self.forwarded.append(wire)
                if len(self.forwarded) == 1:
                    body = b'{"error_code":"TEMPORARILY_UNAVAILABLE","message":"the answer was lost"}'
                    return Answer(503, {"Content-Type": "application/json"}, body)
        return answer
