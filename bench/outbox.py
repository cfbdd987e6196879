"""What the outbox costs: register at 32 writers with the event row in every transaction, against
the same core before the outbox existed (its last commit), alternately in one run.

The baseline core is taken from git (`git archive BASELINE shared/modelrepo`) into the scratch
folder and run in a process of its own (`bench.outbox_worker`), as is the current core, so the two
differ only in the code: same machine, same run, same workload, rounds in ABAB/BABA order. Each run
also reports the process's CPU time per registration, which a busy shared machine disturbs far
less than wall-clock throughput.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from bench.common import MODELREPO, Measured, alternate, ratio, row
from bench.sizes import Sizes

# The last commit before the unit of work and the outbox ("core: commands over a unit of work ...").
BASELINE = "8d060da"
WITHOUT = "without outbox"
REPO = Path(__file__).resolve().parents[1]


def _baseline_tree(work: Path) -> Path:
    target = work / "baseline-core"
    if not target.exists():
        archive = subprocess.run(
            ["git", "archive", "--format=tar", BASELINE, "shared/modelrepo"], cwd=REPO, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / "shared"


def _run(root: Path, count: int, writers: int, core: Path | None) -> tuple[Measured, bool, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(core)] if core else []) + os.pathsep + str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "bench.outbox_worker", str(root), str(count), str(writers)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured = Measured(
        operations=result["operations"],
        failures=result["failures"],
        seconds=result["seconds"],
        latencies=[result["p50_ms"] / 1000] * 2 + [result["p99_ms"] / 1000],
        errors=result["errors"],
    )
    return measured, bool(result["verified"]), float(result["cpu_us"])


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    baseline = _baseline_tree(work)
    writers = max(sizes.register_writers)
    count = sizes.register_versions
    pooled = {MODELREPO: Measured(), WITHOUT: Measured()}
    verified = {MODELREPO: True, WITHOUT: True}
    cpu: dict[str, list[float]] = {MODELREPO: [], WITHOUT: []}
    for round_number, system in alternate(max(2, sizes.rounds * 2), [WITHOUT, MODELREPO]):
        root = work / f"outbox-{system.replace(' ', '-')}-{round_number}"
        measured, ok, cpu_us = _run(root, count, writers, baseline if system == WITHOUT else None)
        pooled[system].add(measured)
        cpu[system].append(cpu_us)
        verified[system] = verified[system] and ok
    ours, theirs = pooled[MODELREPO], pooled[WITHOUT]
    rows = [
        row(
            f"register, {writers} writers, in-process",
            WITHOUT,
            theirs,
            verified=verified[WITHOUT],
            baseline=BASELINE,
            cpu_us=round(statistics.median(cpu[WITHOUT]), 1),
        ),
        row(
            f"register, {writers} writers, in-process",
            MODELREPO,
            ours,
            verified=verified[MODELREPO],
            of_baseline=ratio(ours.throughput, theirs.throughput),
            cpu_us=round(statistics.median(cpu[MODELREPO]), 1),
        ),
    ]
    return {
        "title": f"The outbox's cost: register with event rows vs the core before them ({BASELINE})",
        "unit": "versions/s",
        "rows": rows,
    }
