"""The benchmark at smoke size, so that it cannot rot: every scenario runs, both systems, and the
correctness checks the full run relies on (versions exactly 1..N, digests, counts) hold.

It runs in the bench's own virtualenv (bench/.venv, with MLflow), which `make test` creates.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH_PYTHON = REPO / "bench" / ".venv" / "bin" / "python"
# About 1 minute on a quiet machine; at load 20-50 from other sessions the register scenario alone
# took 204-254 s (MLflow's servers start slowly and are timed only once idle), so the bound is wide.
SMOKE_SECONDS = 600
# "cloud" is test_concurrent_registration.py, "racing" is test_racing_hosts.py
SCENARIOS = ["register", "ingest", "listing", "large", "sqlite", "outbox", "pages", "ui"]


# The two benchmark smokes each start many processes (MLflow servers; fresh interpreters): on one
# xdist worker they run one after the other instead of competing for the machine's two cores.
@pytest.mark.xdist_group("bench-smoke")
@pytest.mark.timeout(SMOKE_SECONDS + 60)
def test_every_scenario_runs_at_smoke_size_with_verified_results(tmp_path: Path) -> None:
    assert BENCH_PYTHON.exists(), "the bench virtualenv is missing: run `make bench-setup`"
    done = subprocess.run(
        [
            str(BENCH_PYTHON),
            "-m",
            "bench",
            "--smoke",
            "--out",
            str(tmp_path),
            "--work",
            str(tmp_path),
            "--only",
            *SCENARIOS,
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_SECONDS,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["scenarios"]) == SCENARIOS
    systems = set()
    for name, scenario in results["scenarios"].items():
        assert "error" not in scenario, scenario.get("error")
        assert scenario["rows"], name
        for row in scenario["rows"]:
            systems.add(row["system"])
            assert row.get("verified", True) is True, (name, row)
            if "failures" not in row:
                continue
            assert row["throughput"] > 0, (name, row)  # every system got work done, the peer too
            if row["system"] == "modelrepo":
                assert row["failures"] == 0, (name, row)
    assert {"modelrepo", "MLflow", "limit"} <= systems
    assert (tmp_path / "results.md").read_text().count("###") == len(SCENARIOS)
    assert (tmp_path / "throughput.png").read_bytes().startswith(b"\x89PNG")
