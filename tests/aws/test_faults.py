"""Throttling, 5xx and lost answers injected below the SDK, on the moto server.

Errors are answered in place of chosen DynamoDB calls through botocore's `before-send` event
(`tests/aws/sdk_faults.py`), so botocore's retry handler and the adapter's error translation run
as they do against AWS; lost answers come from the proxy in `tests/aws/fault_proxy.py`, which lets
moto apply a write and then drops its answer. botocore's backoff delays are its own (jittered,
exponential), recorded, and slept at a tenth of their length to keep `make test` short.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from modelrepo import tables
from modelrepo.adapters.aws import DynamoDBMetadataStore, client_config
from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import ConditionFailed, OutcomeUnknown
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.aws.conftest import EventSourceMapping, Stack, call_api, new_container
from tests.aws.fault_proxy import running_proxy
from tests.aws.sdk_faults import (
    INTERNAL_ERROR,
    PROVISIONED_THROUGHPUT,
    SERVICE_UNAVAILABLE,
    THROTTLING,
    Fault,
    SdkFaults,
    always,
    first,
)
from tests.aws.test_api_function import recorded_artifact, register_event
from tests.aws.test_recovery import table_documents
from tests.contracts.test_register_history import (
    OPERATIONS,
    actor_of,
    check_history,
    hosts_of,
    record_artifacts,
    run_storm,
    storm_operations,
)
from tests.fixtures.aws import REGION, create_table
from tests.fixtures.fault_schedule import FaultSchedule, Odds
from tests.fixtures.faults import FaultyMetadataStore

SLEEP_SCALE = 0.1
# `make bench-aws` runs the storm larger (MODELREPO_AWS_STORM_OPERATIONS).
STORM_OPERATIONS = int(os.environ.get("MODELREPO_AWS_STORM_OPERATIONS", OPERATIONS))


@pytest.fixture
def botocore_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every delay botocore's standard retry mode computes, in seconds (slept at a tenth)."""
    delays: list[float] = []
    compute = ExponentialBackoff.delay_amount

    def recorded(self: ExponentialBackoff, context: Any) -> float:
        delay: float = compute(self, context)
        delays.append(delay)
        return delay * SLEEP_SCALE

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", recorded)
    return delays


def bootstrap_client() -> Any:
    import aws_bootstrap

    metadata = aws_bootstrap.repository().metadata
    assert isinstance(metadata, DynamoDBMetadataStore)
    return metadata._client


def core_retries(output: str) -> int:
    """The `Retries` metric (the core's backoff sleeps) in the function's EMF output."""
    total = 0.0
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            value = json.loads(line).get("Retries", 0)
            total += sum(value) if isinstance(value, list) else value
    return int(total)


def registrations(stack: Stack) -> dict[str, Any]:
    """What the table holds for experiment exp1: counter, version rows, registration audit entries."""
    partition = tables.experiment_partition("exp1")
    rows = {row: doc for (pk, row), doc in table_documents(stack).items() if pk == partition}
    counter = rows.get(tables.COUNTER_ROW)
    return {
        # The counter's numbers (it also carries the experiment's record: times, description, ...).
        "counter": {name: counter[name] for name in ("latest", "sequence")} if counter else None,
        "versions": sorted(
            doc["model"]["version"] for row, doc in rows.items() if row.startswith(tables.VERSION_PREFIX)
        ),
        "audit": sum(
            doc["action"] == "model.registered" for row, doc in rows.items() if row.startswith(tables.EVENT_PREFIX)
        ),
        "idempotency": sum(row.startswith(tables.IDEMPOTENCY_PREFIX) for row in rows),
    }


@pytest.mark.parametrize(
    ("fault", "operation", "count", "botocore_retries", "core_retry_count"),
    [
        # Four attempts in all per call: five throttles outlast botocore once, and the core retries.
        (PROVISIONED_THROUGHPUT, "TransactWriteItems", 5, 4, 1),
        (THROTTLING, "GetItem", 3, 3, 0),
        (INTERNAL_ERROR, "TransactWriteItems", 2, 2, 0),
        (SERVICE_UNAVAILABLE, "GetItem", 2, 2, 0),
    ],
    ids=["ProvisionedThroughputExceeded", "ThrottlingException", "500", "503"],
)
def test_transient_faults_below_the_sdk_are_retried_and_the_registration_completes(
    stack: Stack,
    trigger: EventSourceMapping,
    botocore_backoff: list[float],
    capsys: pytest.CaptureFixture[str],
    fault: Fault,
    operation: str,
    count: int,
    botocore_retries: int,
    core_retry_count: int,
) -> None:
    run_artifact_id = recorded_artifact(stack, trigger)
    botocore_backoff.clear()
    capsys.readouterr()
    with SdkFaults(bootstrap_client(), first(count, fault, operation)).installed() as faults:
        status, _, body = call_api(register_event(run_artifact_id))

    assert (status, body["version"]) == (201, 1), body
    assert faults.injected == {fault.code: count}
    assert len(botocore_backoff) == botocore_retries, "botocore retried each fault it was allowed to"
    assert core_retries(capsys.readouterr().out) == core_retry_count
    assert registrations(stack) == {
        "counter": {"latest": 1, "sequence": 1},
        "versions": [1],
        "audit": 1,
        "idempotency": 0,
    }


def test_throttling_past_the_deadline_answers_503_and_writes_nothing(
    stack: Stack, trigger: EventSourceMapping, botocore_backoff: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    import aws_bootstrap

    monkeypatch.setenv("MODELREPO_REGISTER_DEADLINE_SECONDS", "1")
    new_container(aws_bootstrap)
    run_artifact_id = recorded_artifact(stack, trigger)
    event = register_event(run_artifact_id)
    event["headers"]["Idempotency-Key"] = "throttled-once"
    before = registrations(stack)
    assert before == {"counter": None, "versions": [], "audit": 0, "idempotency": 0}

    with SdkFaults(bootstrap_client(), always(PROVISIONED_THROUGHPUT, "TransactWriteItems")).installed() as faults:
        status, headers, body = call_api(event)

    assert status == 503, body
    assert headers["Content-Type"] == "application/problem+json" and int(headers["Retry-After"]) >= 1
    assert faults.sent["TransactWriteItems"] == 0 and faults.injected[PROVISIONED_THROUGHPUT.code] >= 8
    assert len(set(botocore_backoff)) == len(botocore_backoff) > 4, "jittered: no two delays alike"
    assert registrations(stack) == before, "nothing half-written"

    status, _, body = call_api(event)  # the caller retries later, with the same Idempotency-Key
    assert (status, body["version"]) == (201, 1)
    assert registrations(stack) == {
        "counter": {"latest": 1, "sequence": 1},
        "versions": [1],
        "audit": 1,
        "idempotency": 1,
    }


# --- the register history storm, with its faults below the SDK -----------------------------------


class SdkChaos:
    """Decides, by a seeded schedule, which calls fail below the SDK and which answers are lost.

    Every kind the storm asserts on is guaranteed (`tests.fixtures.fault_schedule`): the first
    calls of TransactWriteItems and of GetItem get each of their faults once; the first write moto
    applies loses its first answer (botocore's retry then carries the same token and is answered
    from it), the second loses every answer (botocore gives up not knowing). Those two are left
    alone below the SDK so that their retries reach the proxy; every other call takes its chances.
    """

    FIRST_ANSWER_LOST = 1
    EVERY_ANSWER_LOST = 1_000

    def __init__(self, seed: int) -> None:
        self.faults = FaultSchedule[Fault](
            seed,
            {
                "TransactWriteItems": Odds(
                    guaranteed=[PROVISIONED_THROUGHPUT, INTERNAL_ERROR],
                    chances=[(0.05, PROVISIONED_THROUGHPUT), (0.03, INTERNAL_ERROR)],
                ),
                "GetItem": Odds(
                    guaranteed=[THROTTLING, SERVICE_UNAVAILABLE],
                    chances=[(0.02, THROTTLING), (0.01, SERVICE_UNAVAILABLE)],
                ),
            },
        )
        lost = [(0.04, self.EVERY_ANSWER_LOST), (0.10, self.FIRST_ANSWER_LOST)]
        self.answers = FaultSchedule[int](
            seed,
            {
                "applied": Odds(guaranteed=[self.FIRST_ANSWER_LOST, self.EVERY_ANSWER_LOST], chances=lost),
                "refused": Odds(chances=lost),
            },
        )
        self.lock = threading.Lock()
        self.lost: dict[str, int] = {}  # request token → answers still to lose
        self.spared: set[str] = set()  # tokens whose retries must reach the proxy

    def fault(self, operation: str, token: str | None) -> Fault | None:
        if operation not in ("TransactWriteItems", "GetItem"):
            return None
        with self.lock:
            if token in self.spared:
                return None
        return self.faults.next(operation)

    def withhold(self, operation: str, token: str | None, applied: bool) -> bool:
        """Lose the first answer to some writes (botocore's retry then carries the same token) and
        every answer to a few (the caller is left not knowing)."""
        if operation != "TransactWriteItems" or token is None:
            return False
        with self.lock:
            if token not in self.lost:
                draw = self.answers.draw("applied" if applied else "refused")
                self.lost[token] = draw.kind or 0
                if draw.guaranteed:
                    self.spared.add(token)
            if self.lost[token] > 0:
                self.lost[token] -= 1
                return True
            return False

    def __str__(self) -> str:
        return str(self.faults)


class WriteOutcomes:
    """Sees what the adapter told each operation about its writes: lost races (conflicts between
    the storm's own threads) and outcomes it could not learn."""

    def __init__(self) -> None:
        self.unknown_operations: set[str] = set()
        self.unknown = 0
        self.conflicts = 0
        self.lock = threading.Lock()

    def __call__(self, writes: Sequence[Write], inner: MetadataStore) -> None:
        try:
            inner.transact(writes)
        except ConditionFailed:
            with self.lock:
                self.conflicts += 1
            raise
        except OutcomeUnknown:
            with self.lock:
                self.unknown_operations.add(actor_of(writes))
                self.unknown += 1
            raise


def test_a_registration_storm_with_faults_below_the_sdk_keeps_every_counter_promise(
    moto_endpoint: str, botocore_backoff: list[float], fault_seed: int
) -> None:
    with running_proxy(moto_endpoint) as proxy:
        client = boto3.session.Session(region_name=REGION).client(
            "dynamodb", endpoint_url=proxy.url, config=client_config(total_attempts=3, read_timeout=0.3)
        )
        seen = WriteOutcomes()
        store = FaultyMetadataStore(inner=DynamoDBMetadataStore(client, create_table(moto_endpoint)), fault=seen)
        retry = RetryPolicy(base_seconds=0.002, cap_seconds=0.05, deadline_seconds=30)
        repo = ModelRepository(MemoryArtifactStore(), store, retry=retry)
        artifact_ids = record_artifacts(repo)
        ops = storm_operations(artifact_ids, STORM_OPERATIONS)

        chaos = SdkChaos(seed=fault_seed)
        with SdkFaults(client, chaos.fault).installed() as faults:
            proxy.decide = chaos.withhold
            run_storm(hosts_of(repo), ops, seen.unknown_operations)
            proxy.decide = None

        outcomes = check_history(repo, ops, artifact_ids)

    # Every kind of fault happened below the SDK, and each path of recognising one's own write ran.
    assert set(faults.injected) == {
        PROVISIONED_THROUGHPUT.code,
        INTERNAL_ERROR.code,
        THROTTLING.code,
        SERVICE_UNAVAILABLE.code,
    }, f"{faults.injected}; {chaos}"
    assert proxy.counts["withheld"] > 0, chaos
    assert proxy.counts["replayed"] > 0, f"a botocore retry carried the token of a committed write; {chaos}"
    assert seen.unknown > 0, f"some writes stayed unknown to botocore; the core's own token resolved them; {chaos}"
    assert seen.conflicts > 0, f"the threads contended; {chaos}"
    assert outcomes["ok"] >= STORM_OPERATIONS * 0.9, f"{outcomes}; {chaos}"
    print(
        f"storm: {dict(outcomes)}; injected {dict(faults.injected)}; proxy {dict(proxy.counts)}; "
        f"unknown outcomes {seen.unknown}; conflicts {seen.conflicts}; botocore retries {len(botocore_backoff)}"
    )
