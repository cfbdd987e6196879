"""Throttling, timeouts and lost answers injected below the Azure SDKs, against Azurite.

The faults come from `tests.azure.faults.FaultyTransport` (the SDK's transport with a plan): the
SDKs' retry policies, the adapters' error translation and the core's retries all run for real.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from modelrepo import tables
from modelrepo.adapters.azure import (
    CLIENT_OPTIONS,
    STORAGE_INCREMENT_BASE,
    STORAGE_INITIAL_BACKOFF,
    STORAGE_JITTER,
    STORAGE_RETRY_TOTAL,
    AzureSettings,
    build_repository,
    connect,
)
from modelrepo.api import Api, Request
from modelrepo.errors import Throttled
from modelrepo.events import ObjectCreated
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.azure.conftest import AzureApp
from tests.azure.faults import (
    BUSY,
    LOST_AFTER,
    TIMEOUT_AFTER,
    TIMEOUT_BEFORE,
    Fault,
    FaultyTransport,
    body_of,
    delegate_wrapped_sleeps,
    first,
    is_table_batch,
)
from tests.contracts.test_register_history import (
    check_history,
    hosts_of,
    record_artifacts,
    run_storm,
    storm_operations,
)
from tests.fixtures.fault_schedule import FaultSchedule, Odds


@dataclass
class Faulty:
    transport: FaultyTransport
    repository: ModelRepository
    delays: list[float]  # what the core's retry policy slept


@pytest.fixture
def faulty(azure_app: AzureApp, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faulty]:
    """The functions' own composition (settings → clients → repository) over a faulty transport."""
    delegate_wrapped_sleeps(monkeypatch)
    settings = AzureSettings.from_environment(azure_app.settings)
    transport = FaultyTransport()
    built = build_repository(settings, connect(settings, transport=transport))
    delays: list[float] = []
    retry = RetryPolicy(base_seconds=0.01, cap_seconds=0.2, deadline_seconds=10, sleep=delays.append)
    yield Faulty(transport, ModelRepository(built.artifacts, built.metadata, retry=retry), delays)


def record(repository: ModelRepository, key: str, data: bytes) -> str:
    info = repository.artifacts.put(key, io.BytesIO(data))
    artifact = repository.record_artifact(ObjectCreated.from_object(info, "test")).artifact
    assert artifact is not None
    return artifact.run_artifact_id


def registration_state(app: AzureApp, experiment: str) -> tuple[Any, list[Any], list[Any]]:
    """Counter, version numbers and audit actions of an experiment: they must always agree."""
    partition = tables.experiment_partition(experiment)
    rows = {row: json.loads(doc["doc"]) for (p, row), doc in app.rows().items() if p == partition}
    counter = rows.get(tables.COUNTER_ROW, {}).get("latest")
    versions = sorted(doc["model"]["version"] for row, doc in rows.items() if row.startswith(tables.VERSION_PREFIX))
    actions = [doc["action"] for row, doc in rows.items() if row.startswith(tables.EVENT_PREFIX)]
    return counter, versions, actions


def is_get(request: object) -> bool:
    return getattr(request, "method", "") in ("GET", "HEAD")


def test_busy_and_timed_out_reads_are_retried_by_the_sdk_with_bounded_backoff(faulty: Faulty) -> None:
    artifact_id = record(faulty.repository, "exp1/run1/model.bin", b"weights")
    partition, row = tables.locate_run_artifact(artifact_id)
    transport, metadata = faulty.transport, faulty.repository.metadata

    busy_then_timeout = [first(2, BUSY, is_get), first(1, TIMEOUT_BEFORE, is_get)]
    transport.plan = lambda request: next((f for plan in busy_then_timeout if (f := plan(request))), None)
    assert metadata.get(partition, row) is not None  # the fourth try answers
    assert transport.count("busy") == 2 and transport.count("timeout-before-commit") == 1
    # The Tables SDK's exponential backoff (first retry at once, then 0.8 s, 1.6 s ...; no jitter).
    assert transport.sleeps == [0.8, 1.6]

    transport.sleeps.clear()
    busy_before = transport.count("busy")
    transport.plan = lambda request: BUSY if is_get(request) else None
    with pytest.raises(Throttled, match="busy"):
        metadata.get(partition, row)
    # Bounded: one try and three retries (azure-core's retry_status bounds retries on error statuses
    # below retry_total), then it gives up cleanly.
    assert transport.count("busy") - busy_before == 4
    assert max(transport.sleeps) <= CLIENT_OPTIONS["retry_backoff_max"]

    # Blob reads: the storage SDK's exponential retry with jitter (2, 4, 8 s, each +-1 s).
    transport.sleeps.clear()
    transport.plan = first(3, BUSY, is_get)
    assert faulty.repository.artifacts.head("exp1/run1/model.bin") is not None
    for attempt, slept in enumerate(transport.sleeps):
        nominal = STORAGE_INITIAL_BACKOFF + STORAGE_INCREMENT_BASE ** (attempt + 1)
        assert nominal - STORAGE_JITTER <= slept <= nominal + STORAGE_JITTER
    assert len(transport.sleeps) == 3 and len(set(transport.sleeps)) == 3  # jittered: no two alike
    busy_before = transport.count("busy")
    transport.plan = lambda request: BUSY if is_get(request) else None
    with pytest.raises(Throttled):
        faulty.repository.artifacts.head("exp1/run1/model.bin")
    assert transport.count("busy") - busy_before == 1 + STORAGE_RETRY_TOTAL


def test_refused_table_writes_are_retried_by_the_core_with_jitter_and_leave_nothing_partial(
    azure_app: AzureApp, faulty: Faulty
) -> None:
    artifact_id = record(faulty.repository, "exp1/run1/model.bin", b"weights")
    refusals = [first(4, BUSY, is_table_batch), first(2, TIMEOUT_BEFORE, is_table_batch)]
    copy_busy = first(1, BUSY, lambda r: "x-ms-copy-source" in r.headers)  # the pin's server-side copy
    faulty.transport.plan = lambda request: next((f for plan in [*refusals, copy_busy] if (f := plan(request))), None)
    model = faulty.repository.register_model("exp1", artifact_id, "ci")
    assert model.version == 1
    assert faulty.transport.count("busy", lambda m, url: url.endswith("$batch")) == 4
    assert faulty.transport.count("timeout-before-commit") == 2
    assert faulty.transport.count("busy", lambda m, url: "$batch" not in url) == 1  # the copy, retried by the SDK
    # Six refusals, six jittered waits of the core (sized from the contention it saw), each within the cap.
    assert len(faulty.delays) == 6 and len(set(faulty.delays)) == 6
    assert all(0 <= d <= 0.2 for d in faulty.delays)
    # Nothing half-written: one counter bump, one version row, one audit entry.
    assert registration_state(azure_app, "exp1") == (1, [1], ["model.registered"])
    with faulty.repository.open_model("exp1", 1) as (_, stream):
        assert stream.read() == b"weights"


def test_writes_refused_until_the_deadline_fail_cleanly_with_503_and_write_nothing(
    azure_app: AzureApp, faulty: Faulty
) -> None:
    artifact_id = record(faulty.repository, "exp1/run1/model.bin", b"weights")
    before = azure_app.rows()
    faulty.transport.plan = lambda request: BUSY if is_table_batch(request) else None
    repository = ModelRepository(
        faulty.repository.artifacts, faulty.repository.metadata, retry=RetryPolicy(deadline_seconds=0.5)
    )
    body = json.dumps({"experimentId": "exp1", "runArtifactId": artifact_id, "registeredBy": "ci"}).encode()
    answer = Api(repository).handle(Request("POST", "/api/register", {}, {"content-type": "application/json"}, body))
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert json.loads(answer.body)["status"] == 503
    assert faulty.transport.count("busy") >= 2
    assert azure_app.rows() == before  # no counter, no version, no audit entry


@pytest.mark.parametrize("fault", [TIMEOUT_AFTER, LOST_AFTER], ids=lambda f: f.name)
def test_a_commit_whose_answer_is_lost_is_recognised_as_its_own_write(
    azure_app: AzureApp, faulty: Faulty, fault: Fault
) -> None:
    artifact_id = record(faulty.repository, "exp1/run1/model.bin", b"weights")
    registering = first(1, fault, lambda r: is_table_batch(r) and b"model.registered" in body_of(r))
    faulty.transport.plan = registering
    faulty.transport.sent.clear()
    model = faulty.repository.register_model("exp1", artifact_id, "ci", description="once")
    assert model.version == 1 and model.description == "once"
    assert faulty.transport.count(fault.name) == 1
    # Two batches went through: the pin's lease and the experiment's index row, written before its
    # first change. The registration's own batch is the faulted one: no second write followed it.
    assert faulty.transport.count("sent", lambda m, url: url.endswith("$batch")) == 2
    assert registration_state(azure_app, "exp1") == (1, [1], ["model.registered"])
    # The next registration is version 2: the lost answer left no gap and no duplicate.
    faulty.transport.plan = None
    assert faulty.repository.register_model("exp1", artifact_id, "ci").version == 2


@pytest.mark.parametrize("fault", [TIMEOUT_AFTER, LOST_AFTER], ids=lambda f: f.name)
def test_an_upload_recorded_behind_a_lost_answer_is_recorded_once(
    azure_app: AzureApp, faulty: Faulty, fault: Fault
) -> None:
    info = faulty.repository.artifacts.put("exp1/run1/model.bin", io.BytesIO(b"weights"))
    faulty.transport.plan = first(1, fault, lambda r: is_table_batch(r) and b"artifact.recorded" in body_of(r))
    result = faulty.repository.record_artifact(ObjectCreated.from_object(info, "test"))
    assert result.artifact is not None and result.outcome.value in ("recorded", "duplicate")
    artifacts = faulty.repository.list_run_artifacts("run1")
    assert [(a.key, a.etag) for a in artifacts] == [("exp1/run1/model.bin", info.etag)]
    audit = [e.action for e in faulty.repository.run_audit("run1").items]
    assert audit == ["artifact.recorded"]


class SdkChaos:
    """Faults for the storm's table batches, by a seeded schedule; reads are sometimes busy (the SDK
    retries them). The first four batches get one of each batch fault, so every kind the storm
    asserts on is guaranteed (`tests.fixtures.fault_schedule`); the rest take their chances."""

    OPERATION = re.compile(rb"op\d{3}")
    BATCH_FAULTS = (BUSY, TIMEOUT_BEFORE, TIMEOUT_AFTER, LOST_AFTER)

    def __init__(self, seed: int) -> None:
        self.schedule = FaultSchedule[Fault](
            seed,
            {
                "read": Odds(chances=[(0.03, BUSY)]),
                "batch": Odds(
                    guaranteed=self.BATCH_FAULTS,
                    chances=[(0.08, BUSY), (0.06, TIMEOUT_BEFORE), (0.08, TIMEOUT_AFTER), (0.06, LOST_AFTER)],
                ),
            },
        )
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.ambiguous: set[str] = set()

    def __call__(self, request: object) -> Fault | None:
        if not is_table_batch(request):
            return self._note(self.schedule.next("read")) if is_get(request) else None
        operation = self.OPERATION.search(body_of(request))
        if operation is None:
            return None
        fault = self.schedule.next("batch")
        if fault is not None and fault is not BUSY:
            with self.lock:
                self.ambiguous.add(operation.group().decode())
        return self._note(fault)

    def _note(self, fault: Fault | None) -> Fault | None:
        if fault is not None:
            with self.lock:
                self.injected[fault.name] += 1
        return fault


def test_a_registration_storm_with_sdk_level_faults_keeps_every_counter_promise(
    faulty: Faulty, fault_seed: int
) -> None:
    """The register history check of tests/contracts, with its faults made by the transport instead."""
    repository = ModelRepository(
        faulty.repository.artifacts,
        faulty.repository.metadata,
        retry=RetryPolicy(base_seconds=0.002, cap_seconds=0.05, deadline_seconds=30),
    )
    artifact_ids = record_artifacts(repository)
    ops = storm_operations(artifact_ids, count=64)
    chaos = SdkChaos(seed=fault_seed)
    faulty.transport.plan = chaos
    run_storm(hosts_of(repository), ops, chaos.ambiguous, threads=8)
    faulty.transport.plan = None

    assert set(chaos.injected) == {
        "busy",
        "timeout-before-commit",
        "timeout-after-commit",
        "lost-after-commit",
    }, f"{chaos.injected}; {chaos.schedule}"
    outcomes = check_history(repository, ops, artifact_ids)
    assert outcomes["ok"] >= len(ops) * 0.9, f"{outcomes}; {chaos.schedule}"
    print(f"\nSDK-level storm on Azurite: {outcomes}, faults {dict(chaos.injected)}")
