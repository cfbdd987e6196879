"""Scenario 4: recording and digesting one large file, against raw hashlib on the same file.

The limit is Python's hashlib sha256 reading the file in 1 MiB chunks. Each measurement runs in a
fresh process (`bench.large_worker`) so its peak RSS is its own; all of them read the same file,
which sits in the page cache after it is written, so they all measure CPU, not the disk.
Recording is measured two ways: as a cloud host does it (the event has no digest, the core streams
the object and digests it) and as the drop folder does it (the folder store's head() digests, the
event carries the digest). Registering it (pinning: copy into the registry, fsync, verify) is shown
for information; it writes the bytes a second time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import MODELREPO, RAW, Measured, alternate, ratio, row
from bench.sizes import Sizes

KEY = "bench/run-large/model.bin"
LABELS = {
    "raw": (RAW, "hashlib sha256 of the file (1 MiB reads)"),
    "record-event": (MODELREPO, "record, event without digest (core streams + digests)"),
    "record-drop": (MODELREPO, "record via drop folder (head digests, event carries it)"),
    "register": (MODELREPO, "register (pin: copy + fsync + verify)"),
}


def _make_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytearray(os.urandom(16 << 20))
    with path.open("wb") as out:
        written = 0
        while written < size:
            block[:8] = written.to_bytes(8, "big")
            piece = memoryview(block)[: min(len(block), size - written)]
            out.write(piece)
            written += len(piece)


def _measure(mode: str, root: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.large_worker", mode, str(root), KEY],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _size(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    root = work / "large"
    _make_file(root / "artifacts" / KEY, sizes.large_bytes)
    pooled = {mode: Measured() for mode in LABELS}
    peaks = {mode: 0.0 for mode in LABELS}
    baselines = {mode: 0.0 for mode in LABELS}
    try:
        for _, mode in alternate(sizes.rounds, list(LABELS)):
            got = _measure(mode, root)
            for leftover in root.glob("metadata-*"):
                leftover.unlink()
            shutil.rmtree(root / "registry", ignore_errors=True)
            pooled[mode].add(Measured(operations=1, seconds=got["seconds"], latencies=[got["seconds"]]))
            peaks[mode] = max(peaks[mode], got["peak_rss_mb"])
            baselines[mode] = max(baselines[mode], got["baseline_rss_mb"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mib = sizes.large_bytes / 2**20
    limit = mib / (pooled["raw"].seconds / pooled["raw"].operations)
    rows = []
    for mode, (system, case) in LABELS.items():
        speed = mib / (pooled[mode].seconds / pooled[mode].operations)
        rows.append(
            row(
                case,
                system,
                pooled[mode],
                mib_per_s=round(speed, 1),
                of_limit=ratio(speed, limit),
                peak_rss_mb=round(peaks[mode], 1),
                baseline_rss_mb=round(baselines[mode], 1),
                mode=mode,
            )
        )
    return {
        "title": f"4. Large artifact: {_size(sizes.large_bytes)}, recorded and digested",
        "unit": "MiB/s",
        "rounds": sizes.rounds,
        "rows": rows,
    }
