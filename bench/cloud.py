"""Scenario 6: 32 concurrent registrations against the cloud adapters on their emulators.

The registrations run as `tests/bench/test_concurrent_registration.py` in the project's own
virtualenv, over every MetadataStore backend that `tests/fixtures` registers: the factories there
already start the emulators (moto server, Azurite) and give each test its own table. The embedded
SQLite store runs too, as the reference row. An adapter that is not in this checkout, or that no
fixture registers, is reported as not available: never as a number.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from bench.common import MODELREPO
from bench.sizes import Sizes

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/bench/test_concurrent_registration.py"
ADAPTERS = (
    ("DynamoDB adapter on moto server", "modelrepo.adapters.aws", "DynamoDBMetadataStore"),
    ("Azure Table adapter on Azurite", "modelrepo.adapters.azure", "AzureTableMetadataStore"),
)
LOG_TAIL_CHARS = 4000
REFERENCE = ("embedded SQLite store (reference)", "modelrepo.adapters.sqlite", "SqliteMetadataStore")


def _run_test(
    test: str, out: Path, env: dict[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run a bench test in the project's venv (it needs the emulators' fixtures); the rows it wrote to `out`."""
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: run `make setup` first (scenario 6 runs in the project's venv)")
    done = subprocess.run(
        [str(python), "-m", "pytest", test, "-q", "-p", "no:cacheprovider", "-n", "0"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_CLOUD_OUT": str(out), **env},
        timeout=timeout,
    )
    return done, [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def _with_log(outcome: dict[str, Any], done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """A failed test's output, its tail, goes into the report under the table."""
    if done.returncode != 0:
        outcome["log"] = (done.stdout + done.stderr)[-LOG_TAIL_CHARS:]
    return outcome


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    done, measured = _run_test(
        TEST,
        work / "cloud.jsonl",
        {
            "BENCH_CLOUD_REGISTRATIONS": str(sizes.cloud_registrations),
            "BENCH_CLOUD_WRITERS": str(sizes.cloud_writers),
        },
        timeout=1800,
    )
    rows: list[dict[str, Any]] = []
    for label, module, store in (*ADAPTERS, REFERENCE):
        found = [m for m in measured if m["store"] == store]
        if importlib.util.find_spec(module) is None:
            rows.append(
                {"case": label, "system": MODELREPO, "not_measured": f"not available: {module} is not in this checkout"}
            )
        elif not found:
            reason = f"not available: no backend in tests/fixtures builds a {store}"
            if done.returncode != 0:
                reason = f"failed: the registration test exited {done.returncode}; see the log below"
            rows.append({"case": label, "system": MODELREPO, "not_measured": reason})
        for result in found:
            hosts = "one host (its threads batch)" if result["hosts"] == 1 else f"{result['hosts']} hosts (racing)"
            case = f"{label} [{result['backend']}], {hosts}"
            rows.append({"case": case, "system": MODELREPO, "verified": True, **result})
    outcome: dict[str, Any] = {
        "title": f"6. Cloud emulators: {sizes.cloud_registrations} registrations by {sizes.cloud_writers} writers",
        "unit": "registrations/s",
        "rows": rows,
        "note": (
            "Every registration must succeed and versions must be exactly 1..N (the test asserts it). One host: "
            "32 threads share one repository, whose registrations of an experiment share transactions (group "
            "commit). 32 hosts: one repository per writer, as separate Lambda containers or Functions workers "
            "would have; they race for the counter and the losers retry with jittered backoff."
        ),
    }
    return _with_log(outcome, done)


RACING_TEST = "tests/bench/test_racing_hosts.py"
RACING_BACKENDS = (
    ("DynamoDB adapter on moto server (one request at a time)", "dynamodb-moto"),
    ("Azure Table adapter on Azurite", "azurite-table"),
    ("embedded SQLite store (reference)", "sqlite"),
)


def run_racing(sizes: Sizes, work: Path) -> dict[str, Any]:
    """Scenario 6b: N processes, one repository each, register into one experiment at once.

    The races run as `tests/bench/test_racing_hosts.py` (see `bench/racing.py`): for each size, the
    old full-jitter policy and the core's policy race in turn (AB, BA, ...), and before each race
    one host times the serial round trip (counter read + conditional transaction) on the same
    emulator, which gives the limit N racing registrations cannot beat.
    """
    done, measured = _run_test(
        RACING_TEST,
        work / "racing.jsonl",
        {
            "BENCH_RACING_HOSTS": ",".join(str(n) for n in sizes.racing_hosts),
            "BENCH_RACING_ROUNDS": str(sizes.racing_rounds),
            "BENCH_RACING_SAMPLES": str(sizes.racing_samples),
        },
        timeout=3600,
    )
    from bench.racing import POLICY_LABELS

    rows: list[dict[str, Any]] = []
    for label, backend in RACING_BACKENDS:
        found = [m for m in measured if m["backend"] == backend]
        if not found:
            reason = "not measured: no row came back"
            if done.returncode != 0:
                reason = f"failed: the racing test exited {done.returncode}; see the log below"
            rows.append({"case": label, "system": MODELREPO, "not_measured": reason})
        for result in found:
            case = f"{label}: {result['hosts']} hosts, {POLICY_LABELS[result['policy']]}"
            rows.append({"case": case, "system": MODELREPO, **result})
    outcome: dict[str, Any] = {
        "title": f"6b. Racing hosts: {', '.join(map(str, sizes.racing_hosts))} processes register at once",
        "unit": "registrations/s",
        "table": "racing",
        "rows": rows,
        "note": (
            "Each host is a process with its own repository (a Lambda container, a Functions worker): no group "
            "commit between them, they race for the experiment's counter row. Serial limit: 1 / (one host's "
            "counter read + conditional 3-row transaction), timed alone on the same emulator before each race. "
            "Policies alternate race by race. Targets: >= 50% of the serial limit, every registration succeeds, "
            "versions exactly 1..N, p99 <= 4x N round trips, <= 2 attempts per success. The hosts run niced: "
            "they share this machine's cores with the emulator."
        ),
    }
    return _with_log(outcome, done)
