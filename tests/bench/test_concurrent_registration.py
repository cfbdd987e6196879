"""Scenario 6 of the benchmark, and its smoke: concurrent registrations on every MetadataStore backend.

It runs over every backend registered in `tests/fixtures` (the embedded ones now; the DynamoDB and
Azure Table adapters with their emulators as soon as their plugins register them), through the
same factories the contract suites use. `python -m bench` runs this file with
BENCH_CLOUD_OUT set to collect the figures; in `make test` it only checks the outcome.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.common import run_concurrently
from bench.counting import CountingMetadataStore
from bench.embedded import EXPERIMENT, gapless, seed_artifact, versions
from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.ports import MetadataStore
from modelrepo.service import ModelRepository


@pytest.mark.parametrize("hosts_per_writer", [False, True], ids=["one-host", "host-per-writer"])
def test_concurrent_registrations_all_succeed_with_versions_1_to_n(
    metadata_store: MetadataStore, metadata_backend: str, tmp_path: Path, hosts_per_writer: bool
) -> None:
    registrations = int(os.environ.get("BENCH_CLOUD_REGISTRATIONS", "32"))
    writers = int(os.environ.get("BENCH_CLOUD_WRITERS", "32"))
    counting = CountingMetadataStore(metadata_store)
    repo = ModelRepository(FolderArtifactStore(tmp_path / "artifacts", tmp_path / "registry"), counting)
    artifact_id = seed_artifact(repo)
    # One host: its threads' registrations share transactions (group commit). A host per writer,
    # as each Lambda container or Functions worker holds its own repository: they race for the
    # counter through the conditional write, and the losers retry.
    hosts = [ModelRepository(repo.artifacts, counting) for _ in range(writers)] if hosts_per_writer else [repo]
    before = counting.counts()

    measured = run_concurrently(
        lambda i: hosts[i % len(hosts)].register_model(EXPERIMENT, artifact_id, "bench"), registrations, writers
    )

    after = counting.counts()
    assert measured.failures == 0, measured.errors
    assert gapless(versions(repo), registrations)
    if out := os.environ.get("BENCH_CLOUD_OUT"):
        transactions = after["transactions"] - before["transactions"]
        line = {
            "backend": metadata_backend,
            "store": type(metadata_store).__name__,
            "hosts": len(hosts),
            "writers": writers,
            **measured.summary(),
            "conflicts": after["conflicts"] - before["conflicts"],
            "throttled": after["throttled"] - before["throttled"],
            "transactions": transactions,
            # Every transaction that did not commit is followed by a retry of its operation.
            "retries": after["conflicts"]
            + after["throttled"]
            + after["unknown"]
            - before["conflicts"]
            - before["throttled"]
            - before["unknown"],
            "success_rate": (registrations - measured.failures) / registrations,
        }
        with open(out, "a", encoding="utf-8") as results:
            results.write(json.dumps(line) + "\n")
