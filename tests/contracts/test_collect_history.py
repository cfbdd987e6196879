"""Deleting races registering the same bytes, with the collector running beside both, on every
backend pair. The history must show: no version that is not deleted ever loses its pinned bytes,
no deleted number is used again, and once the races are over, the collector releases exactly the
bytes no version needs.

The lease is shortened (`collect.LEASE`, 2 s) so that the collections running beside the race may
judge leases stale; the protocol's own check (a registration commits within half its lease, else it
answers Busy and is retried) keeps that safe. Whether a release happens during the race depends on
the machine's pace; the two interleavings that matter are also made deterministic in
tests/unit/test_lifecycle.py (a lease taken while a collector runs, a registration arriving while
its bytes are being released).
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from modelrepo import collect
from modelrepo.errors import Busy, Conflict
from modelrepo.events import ObjectCreated
from modelrepo.service import ModelRepository
from tests.fixtures.pairs import repository

__all__ = ["repository"]

PAYLOADS = [f"weights {n}".encode() for n in range(3)]  # few digests: registrations share them
EXPERIMENTS = ("exp-a", "exp-b")
OPERATIONS = 60
SEED = 20261201


def test_deleting_racing_registration_of_the_same_bytes_never_loses_live_bytes(
    repository: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect, "LEASE", timedelta(seconds=2))
    repo = repository
    artifact_ids = {}
    for experiment in EXPERIMENTS:
        for n, payload in enumerate(PAYLOADS):
            info = repo.artifacts.put(f"{experiment}/run1/model-{n}.bin", io.BytesIO(payload))
            result = repo.record_artifact(ObjectCreated.from_object(info, "test"))
            assert result.artifact is not None
            artifact_ids[(experiment, n)] = result.artifact.run_artifact_id
    randomness = random.Random(SEED)
    plan = [(randomness.choice(EXPERIMENTS), randomness.randrange(len(PAYLOADS))) for _ in range(OPERATIONS)]
    lock = threading.Lock()
    registered: dict[tuple[str, int], str] = {}  # (experiment, version) -> digest
    deleted: set[tuple[str, int]] = set()
    stop = threading.Event()
    collections: list[collect.CollectReport] = []

    def register(step: int) -> None:
        experiment, n = plan[step]
        try:
            model = repo.register_model(experiment, artifact_ids[(experiment, n)], f"writer-{step}")
        except Busy:
            return  # a lease grown too old: the client would retry; nothing was written
        with lock:
            assert (experiment, model.version) not in registered, "a version number was used twice"
            registered[(experiment, model.version)] = model.sha256
        if step % 2 == 0:  # delete every other one right away, racing the next registrations
            try:
                repo.delete_version(experiment, model.version, f"deleter-{step}")
            except Conflict:
                return
            with lock:
                deleted.add((experiment, model.version))

    def collector() -> None:
        while not stop.is_set():
            collections.append(collect.collect(repo.context))

    sweeping = threading.Thread(target=collector)
    sweeping.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(register, range(OPERATIONS)))
    finally:
        stop.set()
        sweeping.join(timeout=120)

    def bytes_of_every_live_version() -> None:
        for (experiment, version), digest in registered.items():
            if (experiment, version) in deleted:
                continue
            with repo.open_model(experiment, version) as (model, stream):
                assert hashlib.sha256(stream.read()).hexdigest() == digest == model.sha256

    bytes_of_every_live_version()
    assert collections, "the collector ran during the race"
    # The race is over: every lease ages past the lease length; the collector releases exactly the
    # digests no version needs, and every live version still reads its bytes.
    monkeypatch.setattr(collect, "LEASE", timedelta(0))
    final = collect.collect(repo.context)
    live = {digest for key, digest in registered.items() if key not in deleted}
    remaining: set[str] = set()
    after: str | None = None
    while True:
        page, after = repo.artifacts.list_pinned(after=after)
        remaining.update(page)
        if after is None:
            break
    assert remaining == live, (final, len(registered), len(deleted))
    bytes_of_every_live_version()
    for experiment in EXPERIMENTS:
        numbers = [m.version for m in repo.list_models(experiment, limit=1000).items]
        tombstones = {v for e, v in deleted if e == experiment}
        assert not set(numbers) & tombstones, "a deleted number never comes back as a live version"
