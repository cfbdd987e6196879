"""Scenario 2: N artifacts of 1 MB, from upload until the last one is visible.

modelrepo: `modelrepo serve` runs; the benchmark writes each file into the drop folder
(`<root>/artifacts/bench/run-i/model.bin`, one run per artifact), then polls lightly
(`GET /api/runs/run-i/artifacts`, newest first) until every one is listed. The clock runs from the
first write to the moment the last one became visible, its `recordedAt` (polling harder would only
take the server's time); an artifact's latency is its `recordedAt` minus the end of its write.
MLflow: N runs, each `create_run`, `log_artifact` of a 1 MB file, `set_terminated`, one
after the other; the artifact is visible when `set_terminated` returns. The source files MLflow
copies are written before its clock starts. Before the rounds, the files are written once untimed
(and removed), as the cold-start scenario runs every case once untimed: in alternated runs the
first round of whichever side came first ran at 255-425 files/s against ~600 for its later rounds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import embedded, mlflow_peer
from bench.common import MLFLOW, MODELREPO, RAW, Measured, alternate, ratio, row
from bench.servers import JsonClient, free_port, modelrepo_server
from bench.sizes import Sizes


def _payloads(count: int, size: int) -> tuple[bytes, list[bytes]]:
    """Distinct contents from one random block: cheap to make, no two artifacts alike."""
    block = os.urandom(size)
    return block, [index.to_bytes(8, "big") + block[8:] for index in range(count)]


def _modelrepo(root: Path, payloads: list[bytes]) -> tuple[Measured, bool]:
    count = len(payloads)
    port = free_port()
    uploads = root / "artifacts" / embedded.EXPERIMENT
    written = [0.0] * count  # wall-clock end of each write, comparable with recordedAt
    with modelrepo_server(root, port, root.parent / f"{root.name}.log"):
        client = JsonClient(port)

        def write_all() -> None:
            for index, payload in enumerate(payloads):
                folder = uploads / f"run-{index:05d}"
                folder.mkdir(parents=True)
                with (folder / "model.bin").open("wb") as out:
                    out.write(payload)
                written[index] = time.time()

        writer = threading.Thread(target=write_all, name="uploader")
        began = time.time()
        writer.start()
        writer.join()
        # Poll lightly, so the measurement does not steal the server's time: the newest upload
        # first, then every one. Each artifact's recordedAt is when it became visible, so the
        # clock stops at the last recordedAt, however late the poll happened to look.
        last = f"/api/runs/run-{count - 1:05d}/artifacts"
        while not client.call("GET", last)["items"]:
            time.sleep(0.05)
        seen: list[dict[str, Any]] = []
        for index in range(count):
            while not (items := client.call("GET", f"/api/runs/run-{index:05d}/artifacts")["items"]):
                time.sleep(0.05)
            seen.append(items[0])
        seconds = max(datetime.fromisoformat(item["recordedAt"]).timestamp() for item in seen) - began
    latencies = [datetime.fromisoformat(item["recordedAt"]).timestamp() - written[i] for i, item in enumerate(seen)]
    ok = all(
        item["sha256"] == hashlib.sha256(payload).hexdigest() and item["size"] == len(payload)
        for item, payload in zip(seen, payloads, strict=True)
    )
    return Measured(operations=count, seconds=seconds, latencies=latencies), ok


def _disk(root: Path, payloads: list[bytes]) -> tuple[Measured, bool]:
    """The limit: only the writes, the same files into new folders, with nothing watching."""
    measured = Measured(operations=len(payloads))
    began = time.perf_counter()
    for index, payload in enumerate(payloads):
        start = time.perf_counter()
        folder = root / "artifacts" / embedded.EXPERIMENT / f"run-{index:05d}"
        folder.mkdir(parents=True)
        with (folder / "model.bin").open("wb") as out:
            out.write(payload)
        measured.latencies.append(time.perf_counter() - start)
    measured.seconds = time.perf_counter() - began
    return measured, True


def _mlflow(root: Path, payloads: list[bytes]) -> tuple[Measured, bool]:
    client = mlflow_peer.local_client(root)
    experiment_id = mlflow_peer.ingest_experiment(client, root / "mlartifacts")
    staging = root / "staging"
    sources = []
    for index, payload in enumerate(payloads):
        source = staging / f"{index:05d}" / "model.bin"
        source.parent.mkdir(parents=True)
        source.write_bytes(payload)
        sources.append(source)
    measured = Measured(operations=len(payloads))
    began = time.perf_counter()
    for source in sources:
        start = time.perf_counter()
        try:
            mlflow_peer.ingest_one(client, experiment_id, source)
        except Exception as error:
            measured.failures += 1
            measured.errors.append(f"{type(error).__name__}: {error}"[:300])
        measured.latencies.append(time.perf_counter() - start)
    measured.seconds = time.perf_counter() - began
    ok = mlflow_peer.logged_artifacts(client, experiment_id) == len(payloads) - measured.failures
    return measured, ok


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    _, payloads = _payloads(sizes.ingest_artifacts, sizes.ingest_bytes)
    pooled = {MODELREPO: Measured(), MLFLOW: Measured(), RAW: Measured()}
    verified = {MODELREPO: True, MLFLOW: True, RAW: True}
    sides = {MODELREPO: _modelrepo, MLFLOW: _mlflow, RAW: _disk}
    # One untimed pass first: on this VM, the first writes after a while touch page-cache memory
    # the host has to hand back first, and the side that happened to run first paid for it.
    warm_up = work / "ingest-warm-up"
    _disk(warm_up, payloads)
    shutil.rmtree(warm_up, ignore_errors=True)
    for round_number, system in alternate(sizes.rounds, [MODELREPO, MLFLOW, RAW]):
        root = work / f"ingest-{system}-{round_number}"
        os.sync()  # each side starts with the dirty pages of the previous one written back
        measured, ok = sides[system](root, payloads)
        pooled[system].add(measured)
        verified[system] = verified[system] and ok
        shutil.rmtree(root, ignore_errors=True)
    size = f"{sizes.ingest_bytes >> 20} MB" if sizes.ingest_bytes >= 1 << 20 else f"{sizes.ingest_bytes >> 10} KB"
    case = f"{sizes.ingest_artifacts} artifacts of {size}"
    rows = [row(case, system, pooled[system], verified=verified[system]) for system in (MODELREPO, MLFLOW)]
    rows[0]["ratio"] = ratio(pooled[MODELREPO].throughput, pooled[MLFLOW].throughput)
    rows[0]["of_limit"] = ratio(pooled[MODELREPO].throughput, pooled[RAW].throughput)
    rows.append(row(f"{case}: writing the files only (the disk's limit)", RAW, pooled[RAW], verified=True))
    return {
        "title": "2. Ingest: upload until visible",
        "unit": "artifacts/s",
        "rounds": sizes.rounds,
        "rows": rows,
        "note": "The limit row writes the same files into new folders with nothing watching: no ingest "
        "that writes each upload to this disk can be faster. modelrepo latency: recordedAt minus end of "
        "write (drop-folder quiet period included); "
        "MLflow latency: create_run + log_artifact + set_terminated.",
    }
