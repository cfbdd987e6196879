"""The two sizes the benchmark runs at: the issue's full sizes, and a smoke size for `make test`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    rounds: int
    register_versions: int
    register_writers: tuple[int, ...]
    register_modes: tuple[str, ...]
    ingest_artifacts: int
    ingest_bytes: int
    listing_sizes: tuple[int, ...]
    listing_mlflow_max: int
    listing_samples: int
    large_bytes: int
    sqlite_transactions: int
    sqlite_writers: tuple[int, ...]
    cloud_registrations: int
    cloud_writers: int
    coldstart_rounds: int
    page_experiments: tuple[int, ...] = (100, 10_000)
    page_events: tuple[int, ...] = (1_000, 100_000)
    page_samples: int = 400
    ui_versions: tuple[int, ...] = (10, 10_000)  # the web page's first view of an experiment
    ui_samples: int = 400
    racing_hosts: tuple[int, ...] = (32, 128)  # processes racing for one experiment's counter
    racing_rounds: int = 2  # races per policy, the old and the new alternated
    racing_samples: int = 40  # serial round trips timed before each race


FULL = Sizes(
    rounds=2,
    register_versions=2000,
    register_writers=(1, 8, 32),
    register_modes=("in-process", "HTTP"),
    ingest_artifacts=2000,
    ingest_bytes=1 << 20,
    listing_sizes=(1_000, 10_000, 100_000),
    # MLflow registers ~250 versions/s here, so 100k would take ~7 minutes of seeding alone.
    listing_mlflow_max=10_000,
    listing_samples=400,
    large_bytes=2 << 30,
    sqlite_transactions=20_000,
    sqlite_writers=(1, 32),
    cloud_registrations=32,
    cloud_writers=32,
    coldstart_rounds=20,
)

SMOKE = Sizes(
    rounds=1,
    register_versions=40,
    register_writers=(8,),  # one size: each `mlflow server` start costs ~30 s of the smoke
    register_modes=("in-process", "HTTP"),
    ingest_artifacts=12,
    ingest_bytes=64 << 10,
    listing_sizes=(250, 500),
    listing_mlflow_max=500,
    listing_samples=5,
    large_bytes=8 << 20,
    sqlite_transactions=500,
    sqlite_writers=(1, 4),
    cloud_registrations=8,
    cloud_writers=4,
    coldstart_rounds=2,
    page_experiments=(200, 400),
    page_events=(200, 1_000),
    page_samples=5,
    ui_versions=(10, 200),
    ui_samples=5,
    racing_hosts=(8,),
    racing_rounds=1,
    racing_samples=10,
)
