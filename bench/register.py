"""Scenario 1: N versions of one experiment under 1, 8 and 32 concurrent writers.

In process: `ModelRepository.register_model` on the embedded SQLite store against
`MlflowClient.create_model_version` on MLflow's SQLite store. Over HTTP: `modelrepo serve` against
`mlflow server`, with the same client. After every run the versions must be exactly 1..N (MLflow:
1..successes, since its failed calls leave nothing behind).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bench import embedded, mlflow_peer
from bench.common import MLFLOW, MODELREPO, Measured, alternate, ratio, row, run_concurrently
from bench.servers import JsonClient, free_port, mlflow_server, modelrepo_server
from bench.sizes import Sizes


def _modelrepo_in_process(root: Path, count: int, writers: int) -> tuple[Measured, bool, dict[str, int]]:
    repo, counting = embedded.repository(root)
    try:
        artifact_id = embedded.seed_artifact(repo)
        before = counting.counts()["transactions"]
        measured = run_concurrently(
            lambda i: repo.register_model(embedded.EXPERIMENT, artifact_id, "bench"), count, writers
        )
        counts = counting.counts()
        counts["transactions"] -= before
        ok = embedded.gapless(embedded.versions(repo), count - measured.failures)
    finally:
        repo.metadata.close()
    return measured, ok and measured.failures == 0, counts


def _mlflow_in_process(root: Path, count: int, writers: int) -> tuple[Measured, bool]:
    client = mlflow_peer.local_client(root)
    mlflow_peer.create_model(client)
    measured = run_concurrently(lambda i: mlflow_peer.register(client, i), count, writers)
    return measured, embedded.gapless(mlflow_peer.versions(client), count - measured.failures)


def _modelrepo_http(root: Path, count: int, writers: int) -> tuple[Measured, bool]:
    repo, _ = embedded.repository(root)
    artifact_id = embedded.seed_artifact(repo)
    repo.metadata.close()
    port = free_port()
    with modelrepo_server(root, port, root.parent / f"{root.name}.log"):
        client = JsonClient(port)
        body = {"experimentId": embedded.EXPERIMENT, "runArtifactId": artifact_id, "registeredBy": "bench"}
        measured = run_concurrently(lambda i: client.call("POST", "/api/register", body), count, writers)
        ok = embedded.gapless(embedded.http_versions(JsonClient(port)), count - measured.failures)
    return measured, ok and measured.failures == 0


def _mlflow_http(root: Path, count: int, writers: int) -> tuple[Measured, bool]:
    port = free_port()
    root.mkdir(parents=True)
    with mlflow_server(root, port, root.parent / f"{root.name}.log"):
        client = JsonClient(port)
        client.call("POST", "/api/2.0/mlflow/registered-models/create", {"name": mlflow_peer.MODEL})
        measured = run_concurrently(
            lambda i: client.call(
                "POST",
                "/api/2.0/mlflow/model-versions/create",
                {"name": mlflow_peer.MODEL, "source": f"s3://bench-models/{i}"},
            ),
            count,
            writers,
        )
        ok = embedded.gapless(mlflow_peer.versions(mlflow_peer.http_client(port)), count - measured.failures)
    return measured, ok


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    count = sizes.register_versions
    for mode in sizes.register_modes:
        for writers in sizes.register_writers:
            pooled = {MODELREPO: Measured(), MLFLOW: Measured()}
            verified = {MODELREPO: True, MLFLOW: True}
            extra: dict[str, dict[str, int]] = {MODELREPO: {}, MLFLOW: {}}
            for round_number, system in alternate(sizes.rounds, [MODELREPO, MLFLOW]):
                root = work / f"register-{mode}-{writers}-{system}-{round_number}"
                if system == MODELREPO and mode == "in-process":
                    measured, ok, counts = _modelrepo_in_process(root, count, writers)
                    for key, value in counts.items():
                        extra[system][key] = extra[system].get(key, 0) + value
                elif system == MODELREPO:
                    measured, ok = _modelrepo_http(root, count, writers)
                elif mode == "in-process":
                    measured, ok = _mlflow_in_process(root, count, writers)
                else:
                    measured, ok = _mlflow_http(root, count, writers)
                pooled[system].add(measured)
                verified[system] = verified[system] and ok
                shutil.rmtree(root, ignore_errors=True)
            case = f"{mode}, {writers} writer{'s' if writers > 1 else ''}"
            for system in (MODELREPO, MLFLOW):
                rows.append(
                    row(
                        case,
                        system,
                        pooled[system],
                        mode=mode,
                        writers=writers,
                        verified=verified[system],
                        **extra[system],
                    )
                )
            rows[-2]["ratio"] = ratio(pooled[MODELREPO].throughput, pooled[MLFLOW].throughput)
    return {
        "title": f"1. Register {count} versions of one experiment under contention",
        "unit": "versions/s",
        "rounds": sizes.rounds,
        "rows": rows,
    }
