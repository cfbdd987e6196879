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
REFERENCE = ("embedded SQLite store (reference)", "modelrepo.adapters.sqlite", "SqliteMetadataStore")


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"{python} is missing: run `make setup` first (scenario 6 runs in the project's venv)")
    out = work / "cloud.jsonl"
    done = subprocess.run(
        [str(python), "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider", "-n", "0"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "BENCH_CLOUD_OUT": str(out),
            "BENCH_CLOUD_REGISTRATIONS": str(sizes.cloud_registrations),
            "BENCH_CLOUD_WRITERS": str(sizes.cloud_writers),
        },
        timeout=1800,
    )
    measured = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
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
    if done.returncode != 0:
        outcome["log"] = (done.stdout + done.stderr)[-4000:]
    return outcome
