"""Scenario 6's racing hosts, and their smoke: N processes register into one experiment at once.

Each backend whose store several processes can share runs: the DynamoDB adapter on the moto
server (which applies one request at a time, `tests/fixtures/aws.py`), the Azure Table adapter on
Azurite, and the embedded SQLite store as the reference. `python -m bench` runs this file with
BENCH_CLOUD_OUT set (and the sizes in BENCH_RACING_*) to collect the figures; in `make test` it runs
8 hosts, one race per policy, and checks what every race must give: every registration succeeds,
and the experiment holds exactly versions 1..N, each answered to the host that registered it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from bench.racing import AZURE, DYNAMODB, POLICIES, SQLITE, Target, run_races
from tests.fixtures.aws import create_table
from tests.fixtures.azure import Azurite


def target(backend: str, request: pytest.FixtureRequest, folder: Path) -> Target:
    artifacts = str(folder / "artifacts")
    if backend == DYNAMODB:
        endpoint: str = request.getfixturevalue("moto_endpoint")
        return Target(backend, endpoint, create_table(endpoint), artifacts)
    if backend == AZURE:
        azurite: Azurite = request.getfixturevalue("azurite")
        table = f"racing{uuid.uuid4().hex[:16]}"
        azurite.storage().tables.create_table(table)
        return Target(backend, azurite.connection_string, table, artifacts)
    return Target(backend, str(folder / "metadata.sqlite3"), "", artifacts)


# Many processes: one xdist worker at a time runs the benchmark smokes, so they do not compete.
@pytest.mark.xdist_group("bench-smoke")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", [DYNAMODB, AZURE, SQLITE])
def test_racing_hosts_all_succeed_with_versions_1_to_n(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    counts = [int(n) for n in os.environ.get("BENCH_RACING_HOSTS", "8").split(",")]
    rounds = int(os.environ.get("BENCH_RACING_ROUNDS", "1"))
    samples = int(os.environ.get("BENCH_RACING_SAMPLES", "10"))
    policies = os.environ.get("BENCH_RACING_POLICIES", ",".join(POLICIES)).split(",")

    rows = run_races(target(backend, request, tmp_path), counts, rounds, policies, samples)
    if out := os.environ.get("BENCH_CLOUD_OUT"):
        with open(out, "a", encoding="utf-8") as results:
            for row in rows:
                results.write(json.dumps({"kind": "racing", **row}) + "\n")

    assert [(row["hosts"], row["policy"]) for row in rows] == [(n, p) for n in counts for p in policies]
    for row in rows:
        assert row["races"] == rounds and row["operations"] == row["hosts"] * rounds, row
        assert row["round_trips"] == rounds * len(policies) * samples and row["round_trip_ms"] > 0, row
        assert row["attempts_per_success"] is None or row["attempts_per_success"] >= 1, row
        # Whatever the policy: versions exactly 1..k for the k that succeeded, each answered to its host.
        assert row["verified"], row
        assert row["transactions"] >= row["operations"] - row["failures"], row
        if row["policy"] == "after":  # the core's policy: every registration succeeds
            assert row["success_rate"] == 1.0, row
