"""Scenario 3: one page of 100 versions at 1k, 10k and 100k existing versions.

Each size is its own experiment (modelrepo) / registered model (MLflow) in one store, seeded
through the public registration call with one writer (modelrepo `register_model`, MLflow
`create_model_version`), so the rows are exactly what users create. Everything that is compared
across sizes is measured interleaved, so that the drift of a shared machine cannot pass for a
difference between sizes: the last registrations before each size are timed in small batches
taken in turn from every size (they show whether registering gets dearer as versions pile up),
and the page reads go round all sizes, systems and positions (the newest page, and a page from the
middle reached with the listing's own cursor / page token). MLflow is seeded only up to
`listing_mlflow_max`; beyond it the table says so.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import embedded, mlflow_peer
from bench.common import MLFLOW, MODELREPO, Measured, ratio, row, run_concurrently
from bench.sizes import Sizes
from modelrepo.service import ModelRepository

WINDOW = 500  # registrations timed just before each size is reached
BATCH = 50  # ... in batches taken in turn from every size


def _name(size: int) -> str:
    return f"bench-{size}"


def _timed(call: Callable[[], int], expected: int) -> float:
    began = time.perf_counter()
    got = call()
    elapsed = time.perf_counter() - began
    if got != expected:
        raise AssertionError(f"a page held {got} versions, expected {expected}")
    return elapsed


def _middle(size: int) -> int:
    """Versions to skip: whole pages, about half of them, leaving at least one full page."""
    return max(100, size // 2 // 100 * 100) if size >= 200 else 0


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    repo, _ = embedded.repository(work / "listing-modelrepo")
    client = mlflow_peer.local_client(work / "listing-mlflow")
    try:
        registers: dict[tuple[str, int], Callable[[int], object]] = {}
        for size in sizes.listing_sizes:
            name = _name(size)
            artifact = embedded.seed_artifact(repo, experiment_id=name)
            registers[MODELREPO, size] = partial(_modelrepo_register, repo, name, artifact)
            if size <= sizes.listing_mlflow_max:
                mlflow_peer.create_model(client, name)
                registers[MLFLOW, size] = partial(_mlflow_register, client, name)
        window = min(WINDOW, *sizes.listing_sizes)
        seeding = {MODELREPO: Measured(), MLFLOW: Measured()}
        for (system, size), register in registers.items():
            seeding[system].add(run_concurrently(register, size - window, 1))
        windows = {key: Measured() for key in registers}
        # A fresh order every round, as for the page reads below: in a fixed order the same sizes
        # always follow one of MLflow's batches.
        turns = list(registers)
        shuffler = random.Random(3)
        for done in range(0, window, BATCH):
            shuffler.shuffle(turns)
            for key in turns:
                windows[key].add(run_concurrently(registers[key], min(BATCH, window - done), 1))
        for (system, size), batch in windows.items():
            seeding[system].add(batch)
            rows.append(row(f"register 1 writer, last {window} before {size:,}", system, batch, size=size))

        pages: dict[tuple[str, int, str], Callable[[], int]] = {}
        for size in sizes.listing_sizes:
            name = _name(size)
            if not embedded.gapless(embedded.versions(repo, name), size):
                raise AssertionError(f"modelrepo's {name} does not hold exactly versions 1..{size}")
            cursor = _modelrepo_cursor(repo, name, _middle(size))
            pages[MODELREPO, size, "newest"] = partial(_modelrepo_page, repo, name, None)
            pages[MODELREPO, size, "middle"] = partial(_modelrepo_page, repo, name, cursor)
            if (MLFLOW, size) in registers:
                if mlflow_peer.versions(client, name) != list(range(1, size + 1)):
                    raise AssertionError(f"MLflow's {name} does not hold exactly versions 1..{size}")
                token = _mlflow_token(client, name, _middle(size))
                pages[MLFLOW, size, "newest"] = partial(_mlflow_page, client, name, None)
                pages[MLFLOW, size, "middle"] = partial(_mlflow_page, client, name, token)
        timings = {page: Measured() for page in pages}
        # A fresh order every round: a read right after one of MLflow's (which churns caches and
        # the allocator) is ~0.25 ms slower, and a fixed order would pin that on one size.
        order = list(pages)
        shuffler.seed(5)
        for _ in range(sizes.listing_samples):
            shuffler.shuffle(order)
            for page in order:
                read = pages[page]
                elapsed = _timed(read, 100)
                timings[page].add(Measured(operations=1, seconds=elapsed, latencies=[elapsed]))
        for size in sizes.listing_sizes:
            for where in ("newest", "middle"):
                case = f"page of 100 ({where}) at {size:,} versions"
                ours = timings[MODELREPO, size, where]
                rows.append(row(case, MODELREPO, ours, size=size, where=where, kind="page"))
                if (MLFLOW, size, where) in timings:
                    theirs = timings[MLFLOW, size, where]
                    rows.append(row(case, MLFLOW, theirs, size=size, where=where, kind="page"))
                    rows[-2]["ratio"] = ratio(ours.throughput, theirs.throughput)
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
        "note": "One experiment (MLflow: registered model) per size in one store, seeded through each system's "
        "own registration call (modelrepo: register_model; MLflow: create_model_version), one writer; "
        "register windows and page reads measured interleaved across sizes.",
    }


def _modelrepo_register(repo: ModelRepository, experiment_id: str, artifact_id: str, index: int) -> object:
    return repo.register_model(experiment_id, artifact_id, "bench")


def _mlflow_register(client: Any, name: str, index: int) -> object:
    return mlflow_peer.register(client, index, name)


def _modelrepo_page(repo: ModelRepository, experiment_id: str, cursor: str | None) -> int:
    return len(repo.list_models(experiment_id, limit=100, cursor=cursor).items)


def _mlflow_page(client: Any, name: str, token: str | None) -> int:
    return mlflow_peer.search_page(client, token, name)[0]


def _modelrepo_cursor(repo: Any, name: str, skip: int) -> str | None:
    """The listing's own cursor after `skip` versions (whole pages of 100)."""
    cursor: str | None = None
    for _ in range(skip // 100):
        cursor = repo.list_models(name, limit=100, cursor=cursor).next_cursor
    return cursor


def _mlflow_token(client: Any, name: str, skip: int) -> str | None:
    token: str | None = None
    for _ in range(skip // 100):
        token = mlflow_peer.search_page(client, token, name)[1]
    return token
