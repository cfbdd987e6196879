"""The web page's first view of an experiment at 10 and at 10,000 versions: the API calls the page
makes for it (shared/modelrepo/ui/app.js, `experimentView`), answered by the core's `Api` exactly as
every host answers them, timed as one view.

Each size is its own root seeded through the public calls (registrations, then a few deployments
to one target), the index brought up to date; the views are then read alternately across sizes in
a fresh random order every round, so a shared machine's drift cannot pass for a difference between
sizes. The first page of every list comes from the API's cursors (newest versions first; audit and
events from the start), so nothing here should grow with the number of versions.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

from bench import embedded
from bench.common import MODELREPO, Measured, row, run_concurrently
from bench.sizes import Sizes
from modelrepo.api import Api, Request
from modelrepo.dispatch import Dispatcher
from modelrepo.projections import Indexer
from modelrepo.service import ModelRepository

EXPERIMENT = "ui"
TARGET = "production"
PAGE = 10  # app.js PAGE: a full first page at 10 versions too, so both sizes answer the same number of items
HISTORY_PAGE = 10  # app.js HISTORY_PAGE


def first_view() -> list[tuple[str, dict[str, str]]]:
    """What the page asks for when an experiment opens, in the order it asks."""
    base = f"/api/experiments/{EXPERIMENT}"
    return [
        (base, {}),
        (base + "/deployments", {}),
        (base + "/models", {"limit": str(PAGE)}),
        (base + f"/deployments/{TARGET}", {"limit": str(HISTORY_PAGE)}),
        (base + "/audit", {"limit": str(PAGE)}),
        (base + "/events", {"after": "0", "limit": str(PAGE)}),
    ]


def _seed(repo: ModelRepository, versions: int) -> None:
    artifact_id = embedded.seed_artifact(repo, experiment_id=EXPERIMENT)
    seeded = run_concurrently(lambda _n: repo.register_model(EXPERIMENT, artifact_id, "bench"), versions, 32)
    if seeded.failures:
        raise AssertionError(f"seeding failed: {seeded.errors}")
    for version in range(max(1, versions - 4), versions + 1):
        repo.deploy(EXPERIMENT, version, TARGET, "bench")
    Dispatcher(repo.metadata, Indexer(repo.metadata)).sweep()


def _open(api: Api, versions: int) -> float:
    """One first view: every call answered 200, the versions page full (or all of them)."""
    began = time.perf_counter()
    answers = [api.handle(Request("GET", path, query)) for path, query in first_view()]
    elapsed = time.perf_counter() - began
    for (path, _query), answer in zip(first_view(), answers, strict=True):
        if answer.status != 200:
            raise AssertionError(f"{path} answered {answer.status}: {answer.body[:200]!r}")
    if len(answers[2].json()["items"]) != min(PAGE, versions):
        raise AssertionError(f"the first page of versions held {len(answers[2].json()['items'])} items")
    return elapsed


def run(sizes: Sizes, work: Path) -> dict[str, Any]:
    repos: dict[int, ModelRepository] = {}
    try:
        for size in sizes.ui_versions:
            repo, _ = embedded.repository(work / f"ui-{size}")
            _seed(repo, size)
            repos[size] = repo
        apis = {size: Api(repo) for size, repo in repos.items()}
        for size, api in apis.items():  # warm both alike: the first reads after seeding fill caches
            for _ in range(3):
                _open(api, size)
        timings = {size: Measured() for size in apis}
        order = [size for size in apis for _ in range(sizes.ui_samples)]
        random.Random(14).shuffle(order)
        for size in order:
            elapsed = _open(apis[size], size)
            timings[size].add(Measured(operations=1, seconds=elapsed, latencies=[elapsed]))
    finally:
        for repo in repos.values():
            repo.metadata.close()
        for size in repos:
            shutil.rmtree(work / f"ui-{size}", ignore_errors=True)
    rows = [
        row(
            f"first view of an experiment ({len(first_view())} API calls) at {size:,} versions",
            MODELREPO,
            measured,
            versions=size,
        )
        for size, measured in timings.items()
    ]
    return {
        "title": "The web page: an experiment's first view at few and many versions",
        "unit": "views/s",
        "rows": rows,
        "note": "The calls app.js makes when an experiment opens (the experiment, its deployments, the first "
        f"page of {PAGE} versions, a target's last {HISTORY_PAGE} deployments, the first page of the audit "
        "trail and of the events), answered in process by the core's Api; sizes read alternately in a "
        "shuffled order.",
    }
