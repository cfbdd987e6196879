"""A burst of 5,000 uploads into the drop folder of a running `modelrepo serve`: each recorded once."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from tests.local.conftest import Served, wait_for

RUNS, FILES_PER_RUN = 50, 100


def test_a_burst_of_5000_uploads_is_recorded_once_each(
    served: Served, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    for run in range(RUNS):
        folder = served.root / "artifacts" / "exp1" / f"run{run:02d}"
        folder.mkdir(parents=True)
        for n in range(FILES_PER_RUN):
            (folder / f"m{n:03d}.bin").write_bytes(os.urandom(32) + b"%d/%d" % (run, n))

    def recorded() -> int:
        return sum(
            len(served.request("GET", f"/api/runs/run{run:02d}/artifacts").json()["items"]) for run in range(RUNS)
        )

    wait_for(lambda: recorded() >= RUNS * FILES_PER_RUN, timeout=120, interval=0.5)
    elapsed = time.monotonic() - started
    record_property("burst_seconds", round(elapsed, 2))
    print(f"\n5,000 uploads recorded in {elapsed:.1f} s")

    for run in range(RUNS):
        trail = served.request("GET", f"/api/runs/run{run:02d}/audit?limit=1000").json()["items"]
        assert [e["action"] for e in trail] == ["artifact.recorded"] * FILES_PER_RUN, run
    assert served.request("GET", "/api/rejections").json()["items"] == []
