"""The cold-start scenario at smoke size, so that it cannot rot: every function of the built template
and the Azure app start in fresh python3.12 processes and answer their first event correctly.

It needs what `make test` builds before pytest runs: the `sam build` output (.aws-sam/build), the
bench's virtualenv and the cold-start virtualenv (bench/.venv-cold). No timing is judged here:
timings at two runs on a busy machine mean nothing; the full run in `make bench` judges them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BENCH_PYTHON = REPO / "bench" / ".venv" / "bin" / "python"
BUILD = REPO / ".aws-sam" / "build"


# The two benchmark smokes each start many processes (MLflow servers; fresh interpreters): on one
# xdist worker they run one after the other instead of competing for the machine's two cores.
@pytest.mark.xdist_group("bench-smoke")
@pytest.mark.timeout(660)  # the subprocess's own bound (600 s) comes first; ~90 s on a quiet machine
def test_every_handler_starts_cold_and_answers_its_first_event(tmp_path: Path) -> None:
    assert BENCH_PYTHON.exists(), "the bench virtualenv is missing: run `make bench-setup`"
    assert (BUILD / "template.yaml").exists(), "the sam build output is missing: run `make aws-build`"
    done = subprocess.run(
        [str(BENCH_PYTHON), "-m", "bench", "--smoke", "--only", "coldstart", "--out", str(tmp_path)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    scenario = results["scenarios"]["coldstart"]
    assert "error" not in scenario, scenario.get("error")
    rows = scenario["rows"]
    for row in rows:
        assert row["failures"] == 0, row  # every process answered, and its answer was the expected one
        assert row["runs"] == 2, row
    template = yaml.safe_load((BUILD / "template.yaml").read_text())
    functions = {name for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions, "no functions in the built template"
    measured = {row.get("function") for row in rows if row.get("cloud") == "aws" and row["system"] == "modelrepo"}
    assert measured == functions  # read from the template: a function added later is measured too
    floors = [row for row in rows if row["system"] == "limit"]
    assert {row["cloud"] for row in floors} == {"aws", "azure"}
    assert any(row.get("cloud") == "azure" and row["system"] == "modelrepo" for row in rows)
    for row in rows:
        if row["system"] == "modelrepo":
            assert row["x_floor"] is not None and row["x_floor"] > 0, row
    target = [t for t in results["targets"] if t["target"].startswith("Cold start")]
    assert target and target[0]["met"] is None  # smoke runs judge nothing
    assert "### 7. Cold start" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "coldstart.png").read_bytes().startswith(b"\x89PNG")
