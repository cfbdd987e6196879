"""Pages that must not grow with what is stored: the experiments listing at 100 and 10,000
experiments, and an experiment's events at 1,000 and 100,000 events.

Each size is its own root, seeded through the public calls (describe_experiment for experiments,
register_model for events: every registration is one event), the index brought up to date by its
subscriber, then pages read in a fresh random order every round across sizes and positions (the
first page, and one from the middle reached with the listing's own cursor), so a shared machine's
drift cannot pass for a difference between sizes.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import embedded
from bench.common import MODELREPO, Measured, row, run_concurrently
from bench.sizes import Sizes
from modelrepo.dispatch import Dispatcher
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository

PAGE = 100


def _seed_experiments(repo: ModelRepository, count: int) -> None:
    run_concurrently(lambda n: repo.describe_experiment(f"exp-{n:06d}", f"model {n}", "bench"), count, 8)
    Dispatcher(repo.metadata, Indexer(repo.metadata)).sweep()


def _seed_events(repo: ModelRepository, count: int) -> None:
    artifact_id = embedded.seed_artifact(repo, experiment_id="events")
    run_concurrently(lambda n: repo.register_model("events", artifact_id, "bench"), count, 32)


def _experiments_page(repo: ModelRepository, cursor: str | None) -> int:
    return len(repo.list_experiments(limit=PAGE, cursor=cursor).items)


def _events_page(repo: ModelRepository, after: int) -> int:
    return len(repo.experiment_events("events", after=after, limit=PAGE).items)


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    repos: dict[tuple[str, int], ModelRepository] = {}
    reads: dict[tuple[str, int, str], Callable[[], int]] = {}
    try:
        for size in sizes.page_experiments:
            repo, _ = embedded.repository(work / f"pages-experiments-{size}")
            repos["experiments", size] = repo
            _seed_experiments(repo, size)
            middle: str | None = None
            for _ in range(size // 2 // PAGE):
                middle = repo.list_experiments(limit=PAGE, cursor=middle).next_cursor
            reads["experiments", size, "first"] = partial(_experiments_page, repo, None)
            reads["experiments", size, "middle"] = partial(_experiments_page, repo, middle)
        for size in sizes.page_events:
            repo, _ = embedded.repository(work / f"pages-events-{size}")
            repos["events", size] = repo
            _seed_events(repo, size)
            reads["events", size, "first"] = partial(_events_page, repo, 0)
            reads["events", size, "middle"] = partial(_events_page, repo, size // 2)
        timings = {key: Measured() for key in reads}
        order = list(reads)
        shuffler = random.Random(7)
        for _ in range(sizes.page_samples):
            shuffler.shuffle(order)
            for key in order:
                began = time.perf_counter()
                got = reads[key]()
                elapsed = time.perf_counter() - began
                if got != PAGE:
                    raise AssertionError(f"{key} held {got} items, expected {PAGE}")
                timings[key].add(Measured(operations=1, seconds=elapsed, latencies=[elapsed]))
    finally:
        for repo in repos.values():
            repo.metadata.close()
        for kind, size in repos:
            shutil.rmtree(work / f"pages-{kind}-{size}", ignore_errors=True)
    rows = [
        row(
            f"page of {PAGE} {kind} ({where}) at {size:,} {kind}",
            MODELREPO,
            measured,
            kind=kind,
            size=size,
            where=where,
        )
        for (kind, size, where), measured in timings.items()
    ]
    return {
        "title": "Pages of experiments and of events as they pile up",
        "unit": "pages/s",
        "rows": rows,
        "note": "Experiments seeded with describe_experiment and listed from the index; events are one "
        "experiment's registrations, replayed from a sequence. Reads interleaved across sizes.",
    }
