"""A concurrent registration storm with injected faults, checked like Jepsen checks a counter.

Every operation is recorded as ok (with the version it was told), failed (a clean error), or
unknown (it gave up after a write whose outcome it could not learn). The checker then demands of
every experiment: versions form exactly 1..N with no duplicate; every ok answer names a row that is
that operation's own registration; no operation registered twice; an unknown operation resolved to
at most one version; a failed operation left nothing behind. Runs on every MetadataStore backend.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from modelrepo.adapters.memory import MemoryArtifactStore
from modelrepo.errors import Busy, ConditionFailed, OutcomeUnknown, Throttled
from modelrepo.events import ObjectCreated
from modelrepo.ports import MetadataStore, Write
from modelrepo.retry import RetryPolicy
from modelrepo.service import ModelRepository
from tests.fixtures.fault_schedule import FaultSchedule, Odds
from tests.fixtures.faults import FaultyMetadataStore

EXPERIMENTS = ("exp-a", "exp-b", "exp-c")
OPERATIONS = 72
THREADS = 12


@dataclass
class Op:
    name: str
    experiment: str
    artifact_id: str
    idempotency_key: str | None
    outcome: str = "pending"  # ok | failed | unknown
    version: int | None = None


class Chaos:
    """Fails some transactions the ways a cloud does: refused, throttled, lost after commit, lost before.

    The first four transactions get one of each, so every kind is sure to happen; the rest are
    drawn from the seeded schedule (`tests.fixtures.fault_schedule`).
    """

    KINDS = ("conflict", "throttle", "lost-before-commit", "lost-after-commit")

    def __init__(self, seed: int) -> None:
        self.schedule = FaultSchedule(
            seed,
            {
                "transact": Odds(
                    guaranteed=self.KINDS,
                    chances=[
                        (0.10, "conflict"),
                        (0.08, "throttle"),
                        (0.08, "lost-before-commit"),
                        (0.10, "lost-after-commit"),
                    ],
                )
            },
        )
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.ambiguous: set[str] = set()  # operations that saw an unknown outcome

    def __call__(self, writes: Sequence[Write], inner: MetadataStore) -> None:
        kind = self.schedule.next("transact")
        actor = actor_of(writes)
        if kind is not None:
            with self.lock:
                self.injected[kind] += 1
                if kind.startswith("lost-"):
                    self.ambiguous.add(actor)
        if kind == "conflict":
            raise ConditionFailed("injected conflict")
        if kind == "throttle":
            raise Throttled("injected throttling")
        if kind == "lost-before-commit":
            raise OutcomeUnknown("injected: request lost before it reached the store")
        inner.transact(writes)
        if kind == "lost-after-commit":
            raise OutcomeUnknown("injected: response lost after the commit")


def actor_of(writes: Sequence[Write]) -> str:
    for write in writes:
        data = getattr(write, "data", {})
        if "model" in data:
            return str(data["model"]["registeredBy"])
    return ""


def record_artifacts(repo: ModelRepository) -> dict[str, str]:
    """One recorded run artifact per experiment, by experiment."""
    artifact_ids: dict[str, str] = {}
    for n, experiment in enumerate(EXPERIMENTS):
        info = repo.artifacts.put(f"{experiment}/run-{n}/model.bin", io.BytesIO(f"model {n}".encode()))
        result = repo.record_artifact(ObjectCreated.from_object(info, "storm"))
        assert result.artifact is not None
        artifact_ids[experiment] = result.artifact.run_artifact_id
    return artifact_ids


def storm_operations(artifact_ids: dict[str, str], count: int = OPERATIONS) -> list[Op]:
    """`count` registrations spread over the experiments; every fourth carries an Idempotency-Key."""
    return [
        Op(
            name=f"op{i:03d}",
            experiment=EXPERIMENTS[i % len(EXPERIMENTS)],
            artifact_id=artifact_ids[EXPERIMENTS[i % len(EXPERIMENTS)]],
            idempotency_key=f"key-{i}" if i % 4 == 0 else None,
        )
        for i in range(count)
    ]


HOSTS = 4


def hosts_of(repo: ModelRepository, count: int = HOSTS) -> list[ModelRepository]:
    """Several repositories over the same stores, as several processes or containers would be.

    One repository lets its own threads take turns per experiment; separate ones race for real,
    so the storm exercises the optimistic write's conflicts and retries, not only the faults.
    """
    return [repo] + [ModelRepository(repo.artifacts, repo.metadata, retry=repo.retry_policy) for _ in range(count - 1)]


def run_storm(hosts: Sequence[ModelRepository], ops: Sequence[Op], ambiguous: set[str], threads: int = THREADS) -> None:
    """Run every operation concurrently, spread over the hosts, and record its outcome; an
    operation that gave up is unknown if it saw an ambiguous write (its name in `ambiguous`), else
    failed."""

    def run(op: Op) -> None:
        repo = hosts[int(op.name.removeprefix("op")) % len(hosts)]
        try:
            model = repo.register_model(op.experiment, op.artifact_id, op.name, idempotency_key=op.idempotency_key)
        except Busy:
            op.outcome = "unknown" if op.name in ambiguous else "failed"
            return
        op.outcome, op.version = "ok", model.version

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, ops))


def check_history(repo: ModelRepository, ops: Sequence[Op], artifact_ids: dict[str, str]) -> Counter[str]:
    """The counter/CAS checks on the recorded history; answers the outcomes' counts."""
    assert all(op.outcome != "pending" for op in ops)
    by_op: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for experiment in EXPERIMENTS:
        rows = repo.list_models(experiment, limit=1000).items
        numbers = sorted(m.version for m in rows)
        assert numbers == list(range(1, len(numbers) + 1)), f"{experiment}: {numbers}"  # gapless, no duplicate
        for model in rows:
            by_op[model.registered_by].append((experiment, model.version))
            assert model.run_artifact_id == artifact_ids[experiment]

    for op in ops:
        registered = by_op.get(op.name, [])
        if op.outcome == "ok":
            assert registered == [(op.experiment, op.version)], f"{op.name} answered {op.version}, rows {registered}"
        elif op.outcome == "unknown":
            assert len(registered) <= 1, f"{op.name} registered {registered}"
        else:
            assert registered == [], f"{op.name} failed but registered {registered}"
    return Counter(op.outcome for op in ops)


def test_a_faulty_registration_storm_keeps_every_counter_promise(
    metadata_store: MetadataStore, fault_seed: int
) -> None:
    chaos = Chaos(seed=fault_seed)
    faulty = FaultyMetadataStore(inner=metadata_store)
    retry = RetryPolicy(base_seconds=0.002, cap_seconds=0.05, deadline_seconds=30)
    repo = ModelRepository(MemoryArtifactStore(), faulty, retry=retry)
    artifact_ids = record_artifacts(repo)
    ops = storm_operations(artifact_ids)

    faulty.fault = chaos
    run_storm(hosts_of(repo), ops, chaos.ambiguous)
    faulty.fault = None

    # The faults really happened, of every kind.
    assert set(chaos.injected) == set(Chaos.KINDS), f"{chaos.injected}; {chaos.schedule}"
    outcomes = check_history(repo, ops, artifact_ids)
    assert outcomes["ok"] >= OPERATIONS * 0.9, f"{outcomes}; {chaos.schedule}"
