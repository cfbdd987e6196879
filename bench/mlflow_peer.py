"""The peer: MLflow's model registry and tracking on its SQLite store, used as its docs show.

Imported only inside the bench's own virtualenv, where MLflow is installed at a pinned version.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow  # type: ignore[import-not-found,unused-ignore]
from mlflow import MlflowClient

# MLflow logs every retried version number at INFO; the benchmark counts outcomes itself.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

VERSION: str = mlflow.__version__
MODEL = "bench-model"


def local_client(root: Path) -> Any:
    """An in-process client on a fresh SQLite store (migrations run here, outside any timing)."""
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments()  # creates the schema now rather than inside the first timed call
    return client


def http_client(port: int) -> Any:
    uri = f"http://127.0.0.1:{port}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def create_model(client: Any, name: str = MODEL) -> None:
    client.create_registered_model(name)


def register(client: Any, index: int, name: str = MODEL) -> int:
    """One `create_model_version`; no waiting for READY, which the SQLite store sets at once."""
    version = client.create_model_version(name, source=f"s3://bench-models/{index}", await_creation_for=0)
    return int(version.version)


def versions(client: Any, name: str = MODEL) -> list[int]:
    """Every version number of a registered model, through MLflow's paged search."""
    found: list[int] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name='{name}'", max_results=1000, page_token=token)
        found.extend(int(v.version) for v in page)
        token = page.token
        if not token:
            return sorted(found)


def search_page(client: Any, token: str | None = None, name: str = MODEL) -> tuple[int, str | None]:
    """One page of 100 versions: how many came back and the token of the next page."""
    page = client.search_model_versions(f"name='{name}'", max_results=100, page_token=token)
    return len(page), page.token


def ingest_experiment(client: Any, artifact_root: Path) -> str:
    experiment_id: str = client.create_experiment("bench-ingest", artifact_location=artifact_root.as_uri())
    return experiment_id


def ingest_one(client: Any, experiment_id: str, source: Path) -> None:
    """A run that logs one artifact, as a training script does: create, log, finish."""
    run = client.create_run(experiment_id)
    client.log_artifact(run.info.run_id, str(source))
    client.set_terminated(run.info.run_id)


def logged_artifacts(client: Any, experiment_id: str) -> int:
    """How many finished runs of the experiment list their artifact: MLflow's 'visible'."""
    runs = client.search_runs([experiment_id], max_results=50_000)
    return sum(1 for run in runs if run.info.status == "FINISHED" and client.list_artifacts(run.info.run_id))
