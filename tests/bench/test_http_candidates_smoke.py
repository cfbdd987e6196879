"""The HTTP server comparison of bench/README.md at smoke size, so that it cannot rot: every candidate
serves the API, registers versions exactly 1..N and gets a figure (timings at this size mean nothing)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH_PYTHON = REPO / "bench" / ".venv" / "bin" / "python"
CANDIDATES = {"http.server", "h11 threads", "uvicorn", "waitress"}


def test_every_http_server_candidate_runs_and_registers_gaplessly(tmp_path: Path) -> None:
    assert BENCH_PYTHON.exists(), "the bench virtualenv is missing: run `make bench-setup`"
    out = tmp_path / "candidates.json"
    command = ["-m", "bench.http_candidates", "--versions", "24", "--rounds", "1", "--writers", "4", "--out", str(out)]
    done = subprocess.run(
        [str(BENCH_PYTHON), *command], check=False, cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["candidate"] for row in rows} == CANDIDATES
    for row in rows:
        assert (row["operations"], row["failures"]) == (24, 0), row
        assert row["throughput"] > 0, row
