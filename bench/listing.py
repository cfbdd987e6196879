"""Scenario 3: one page of 100 versions at 1k, 10k and 100k existing versions.

Both stores are seeded through their public registration call, one writer (modelrepo:
`register_model`, MLflow: `create_model_version`), so the rows are exactly what users create. The
last registrations before each size are timed as well: they show whether registering gets dearer
as versions pile up. At each size the newest page and a page from the middle (reached with the
listing's own cursor / page token) are read alternately from both systems. MLflow is seeded only
up to `listing_mlflow_max`; beyond it the table says so.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import embedded, mlflow_peer
from bench.common import MLFLOW, MODELREPO, Measured, ratio, row, run_concurrently
from bench.sizes import Sizes

WINDOW = 500  # registrations timed just before each size is reached


def _timed(call: Callable[[], int], expected: int) -> float:
    began = time.perf_counter()
    got = call()
    elapsed = time.perf_counter() - began
    if got != expected:
        raise AssertionError(f"a page held {got} versions, expected {expected}")
    return elapsed


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    repo, _ = embedded.repository(work / "listing-modelrepo")
    client = mlflow_peer.local_client(work / "listing-mlflow")
    mlflow_peer.create_model(client)
    artifact_id = embedded.seed_artifact(repo)
    have = {MODELREPO: 0, MLFLOW: 0}
    seeding = {MODELREPO: Measured(), MLFLOW: Measured()}
    registers = {
        MODELREPO: lambda i: repo.register_model(embedded.EXPERIMENT, artifact_id, "bench"),
        MLFLOW: lambda i: mlflow_peer.register(client, i),
    }
    try:
        for size in sizes.listing_sizes:
            systems = [MODELREPO, MLFLOW] if size <= sizes.listing_mlflow_max else [MODELREPO]
            for system in systems:
                bulk = size - have[system] - min(WINDOW, size - have[system])
                seeding[system].add(run_concurrently(registers[system], bulk, 1))
                window = run_concurrently(registers[system], size - have[system] - bulk, 1)
                seeding[system].add(window)
                have[system] = size
                rows.append(row(f"register 1 writer, last {window.operations} before {size:,}", system, window))
            found = embedded.versions(repo)
            if not embedded.gapless(found, size):
                raise AssertionError(f"modelrepo holds {len(found)} versions, not exactly 1..{size}")
            middle_cursor = _modelrepo_middle_cursor(repo, size)
            pages: dict[str, dict[str, Callable[[], int]]] = {
                MODELREPO: {
                    "newest": lambda: len(repo.list_models(embedded.EXPERIMENT, limit=100).items),
                    "middle": lambda cursor=middle_cursor: len(  # type: ignore[misc]
                        repo.list_models(embedded.EXPERIMENT, limit=100, cursor=cursor).items
                    ),
                }
            }
            if MLFLOW in systems:
                if mlflow_peer.versions(client) != list(range(1, size + 1)):
                    raise AssertionError(f"MLflow does not hold exactly versions 1..{size}")
                token = _mlflow_middle_token(client, size)
                pages[MLFLOW] = {
                    "newest": lambda: mlflow_peer.search_page(client)[0],
                    "middle": lambda token=token: mlflow_peer.search_page(client, token)[0],  # type: ignore[misc]
                }
            for where in ("newest", "middle"):
                timings = {system: Measured() for system in pages}
                for _ in range(sizes.listing_samples):
                    for system in pages:
                        elapsed = _timed(pages[system][where], 100)
                        timings[system].add(Measured(operations=1, seconds=elapsed, latencies=[elapsed]))
                case = f"page of 100 ({where}) at {size:,} versions"
                rows.append(row(case, MODELREPO, timings[MODELREPO], size=size, where=where, kind="page"))
                if MLFLOW in timings:
                    rows.append(row(case, MLFLOW, timings[MLFLOW], size=size, where=where, kind="page"))
                    rows[-2]["ratio"] = ratio(timings[MODELREPO].throughput, timings[MLFLOW].throughput)
                else:
                    rows.append(
                        {
                            "case": case,
                            "system": MLFLOW,
                            "not_measured": f"MLflow seeded only to {sizes.listing_mlflow_max:,} versions "
                            f"(it registers at ~{seeding[MLFLOW].throughput:.0f}/s here)",
                        }
                    )
    finally:
        repo.metadata.close()
        shutil.rmtree(work / "listing-modelrepo", ignore_errors=True)
        shutil.rmtree(work / "listing-mlflow", ignore_errors=True)
    for system in (MODELREPO, MLFLOW):
        rows.append(row("seeding, 1 writer (all registrations)", system, seeding[system]))
    return {
        "title": "3. Listing: one page of 100 versions as versions pile up",
        "unit": "pages/s",
        "samples": sizes.listing_samples,
        "rows": rows,
        "note": "Seeded through each system's own registration call (modelrepo: register_model; "
        "MLflow: create_model_version), one writer.",
    }


def _middle(size: int) -> int:
    """Versions to skip: whole pages, about half of them, leaving at least one full page."""
    return max(100, size // 2 // 100 * 100) if size >= 200 else 0


def _modelrepo_middle_cursor(repo: Any, size: int) -> str:
    """The listing's own cursor to a full page around the middle."""
    cursor: str | None = None
    skipped = 0
    while skipped < _middle(size):
        page = repo.list_models(embedded.EXPERIMENT, limit=100, cursor=cursor)
        skipped += len(page.items)
        cursor = page.next_cursor
    assert cursor is not None
    return cursor


def _mlflow_middle_token(client: Any, size: int) -> str:
    token: str | None = None
    skipped = 0
    while skipped < _middle(size):
        got, token = mlflow_peer.search_page(client, token)
        skipped += got
    assert token is not None
    return token
