"""MLflow's client (pinned, in .venv-mlflow) uses `modelrepo serve` as its model registry.

Everything goes over real HTTP: MLflow -> a loopback front (which can lose one answer) ->
`modelrepo serve` with an API key that MLflow sends as MLFLOW_TRACKING_TOKEN. The model folder is
dropped into the drop folder the way a training job writes it, and registered from there."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.loopback import Answer, Wire, loopback
from tests.local.conftest import Served, start_serve, stop_serve
from tests.mlflow.conftest import BURST, NAME, RUN, LosesOneAnswer, check_report, files_of, run_scenario

KEY = "mlflow-test-key"


def forward_to(served: Served) -> LosesOneAnswer:
    """Hands each request to `modelrepo serve` as it came (its Host header included)."""

    def forward(wire: Wire) -> Answer:
        headers = {k: v for k, v in wire.headers.items() if k not in ("content-length", "connection")}
        outgoing = urllib.request.Request(
            served.url + wire.target, data=wire.body or None, headers=headers, method=wire.method
        )
        try:
            with urllib.request.urlopen(outgoing, timeout=60) as answer:
                return Answer(answer.status, dict(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, dict(error.headers.items()), error.read())

    return LosesOneAnswer(forward)


@pytest.fixture
def served_with_key(tmp_path: Path) -> Iterator[Served]:
    running = start_serve(tmp_path / "root", api_key=KEY)
    yield running
    stop_serve(running)


@pytest.mark.slow
def test_mlflow_uses_modelrepo_serve_as_its_model_registry(
    served_with_key: Served, tiny_model: Path, tmp_path: Path
) -> None:
    drop = served_with_key.root / "artifacts"
    sources = []
    for name in (NAME, BURST):
        folder = drop / name / RUN / "model"
        shutil.copytree(tiny_model, folder)  # as a training job writes its model folder
        sources.append(str(folder))
    front = forward_to(served_with_key)
    with loopback(front) as server:
        report = run_scenario(
            tmp_path, server.url, (sources[0], sources[1]), {"MLFLOW_TRACKING_TOKEN": KEY}, search_index=True
        )
    check_report(report, files_of(tiny_model), search_index=True)
    assert len(front.forwarded) == 2  # the lost answer's request reached the service twice
