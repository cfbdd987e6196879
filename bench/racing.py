"""Racing hosts: N processes, each with its own repository, register into one experiment at once.

Each process is what one Lambda container or one Functions worker holds: its own clients and its
own repository, so registrations of different processes never share a transaction (no group
commit between them). They race for the experiment's counter row through its conditional write,
and the losers retry under their repository's retry policy.

Every host is warm before the race, as a container that has served requests before: its clients
are built, it has registered once into an experiment of its own (which pinned the bytes its race
registration points at, and gave its retry policy one uncontended round trip to learn from), and it
has read its race artifact. The timed call is the whole `register_model`; on a warm host it costs
the counter read and the conditional transaction of each attempt, and nothing else, which is the
work the serial limit counts.

The serial limit is measured in the same run by one of the hosts, alone, on the same emulator:
read the counter row, then one conditional transaction of a registration's three rows (counter,
version, event, the sizes a registration writes), again and again. N registrations cannot finish
sooner than N such round trips one after the other.

This module runs in the project's virtualenv (it needs the cloud SDKs and the test fixtures'
emulators); `tests/bench/test_racing_hosts.py` drives it, and `bench/cloud.py` runs that test.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import percentile
from bench.counting import CountingMetadataStore
from bench.embedded import versions
from modelrepo import tables
from modelrepo.adapters.folder import FolderArtifactStore
from modelrepo.events import ObjectCreated
from modelrepo.ports import MetadataStore, Put
from modelrepo.retry import Attempt, RetryPolicy
from modelrepo.service import ModelRepository

DYNAMODB = "dynamodb-moto"
AZURE = "azurite-table"
SQLITE = "sqlite"
REGION = "us-east-1"
HOST_NICENESS = 10
# A host that has not answered by then is stuck: the race fails instead of hanging the benchmark.
ANSWER_SECONDS = 600.0


@dataclass(frozen=True)
class FullJitter(RetryPolicy):
    """The core's policy before issue 15, kept here to race against: after the k-th failed attempt,
    sleep uniform(0, min(100 ms, 1 ms x 2^k)), whatever the attempt saw."""

    cap_seconds: float = 0.1

    def delay(self, attempt: Attempt, race: Any, left: float) -> float:
        return self.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt.number + 1)))


POLICIES: dict[str, Callable[[], RetryPolicy]] = {"before": FullJitter, "after": RetryPolicy}
POLICY_LABELS = {
    "before": "full jitter, 1-100 ms (before)",
    "after": "contention-sized (after)",
}


@dataclass(frozen=True)
class Target:
    """Where the hosts' metadata lives, and how each process opens its own client to it."""

    backend: str  # DYNAMODB, AZURE or SQLITE
    address: str  # the moto endpoint, Azurite's connection string, or the SQLite file
    table: str
    artifacts: str  # a folder: the FolderArtifactStore every host shares (uploads and registry)

    def metadata(self) -> MetadataStore:
        if self.backend == DYNAMODB:
            import boto3

            from modelrepo.adapters.aws import DynamoDBMetadataStore, client_config

            session = boto3.session.Session(
                aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
            )
            client = session.client("dynamodb", endpoint_url=self.address, config=client_config())
            return DynamoDBMetadataStore(client, self.table)
        if self.backend == AZURE:
            from modelrepo.adapters.azure import AzureStorage, AzureTableMetadataStore

            storage = AzureStorage.from_connection_string(self.address)
            return AzureTableMetadataStore(storage.tables.get_table_client(self.table))
        if self.backend == SQLITE:
            from modelrepo.adapters.sqlite import SqliteMetadataStore

            return SqliteMetadataStore(Path(self.address))
        raise ValueError(f"unknown backend {self.backend!r}")

    def artifact_store(self) -> FolderArtifactStore:
        root = Path(self.artifacts)
        return FolderArtifactStore(root / "uploads", root / "registry")


def payload(host: int) -> bytes:
    """The bytes host `host` registers: its own, so that no two hosts share a pinned digest."""
    return f"model of racing host {host}\n".encode()


def seed(repo: ModelRepository, experiment: str, hosts: list[int]) -> list[str]:
    """One recorded run artifact per host in `experiment`; their runArtifactIds in host order."""
    found = []
    for host in hosts:
        info = repo.artifacts.put(f"{experiment}/run-{host}/model.bin", io.BytesIO(payload(host)))
        result = repo.record_artifact(ObjectCreated.from_object(info, "bench"))
        assert result.artifact is not None, result
        found.append(result.artifact.run_artifact_id)
    return found


# --- in each host process ------------------------------------------------------------------------


class TracingStore(CountingMetadataStore):
    """Counts like its base, and keeps a timeline of counter reads and transactions when asked
    (BENCH_RACING_TRACE): for studying a race, not for its figures."""

    def __init__(self, inner: MetadataStore) -> None:
        super().__init__(inner)
        self.timeline: list[tuple[str, float, float, object]] | None = (
            [] if os.environ.get("BENCH_RACING_TRACE") else None
        )

    def get(self, partition: str, row: str) -> Any:
        began = time.perf_counter()
        item = super().get(partition, row)
        if self.timeline is not None and row == tables.COUNTER_ROW:
            sequence = item.data.get("sequence") if item is not None else 0
            self.timeline.append(("read", began, time.perf_counter(), sequence))
        return item

    def transact(self, writes: Any) -> None:
        began = time.perf_counter()
        outcome = "committed"
        try:
            super().transact(writes)
        except Exception as error:
            outcome = type(error).__name__
            raise
        finally:
            if self.timeline is not None:
                self.timeline.append(("transact", began, time.perf_counter(), outcome))


def _host(index: int, target: Target, orders: multiprocessing.connection.Connection, start: Any) -> None:
    """One racing host: obey orders from the benchmark until it sends None.

    Hosts run at a lower CPU priority than the emulator: on this machine they share its two cores,
    and 128 runnable hosts would otherwise leave the one store they all wait for a 1/129th share of
    them, a limit of this test bed that no cloud store has (it runs on machines of its own).
    """
    os.nice(HOST_NICENESS)
    counting = TracingStore(target.metadata())
    policies = {name: make() for name, make in POLICIES.items()}
    repo = ModelRepository(target.artifact_store(), counting)
    while (order := orders.recv()) is not None:
        try:
            kind, arguments = order
            if kind == "warm":
                experiment, artifact_id = arguments
                for policy in policies.values():  # twice each: the second is a bare read + write
                    repo.context.retry = policy
                    repo.register_model(experiment, artifact_id, f"host-{index}")
                    repo.register_model(experiment, artifact_id, f"host-{index}")
                orders.send({"ok": True})
            elif kind == "race":
                policy, experiment, artifact_id = arguments
                repo.context.retry = policies[policy]
                repo.get_artifact(artifact_id)
                orders.send({"ready": True})
                start.wait()
                _race(index, repo, counting, orders, experiment, artifact_id)
            elif kind == "round-trips":
                orders.send({"ok": True, "samples": _round_trips(counting.inner, *arguments)})
            else:
                raise ValueError(f"unknown order {kind!r}")
        except Exception:
            orders.send({"ok": False, "error": traceback.format_exc(limit=6)})
    counting.close()


def _race(
    index: int,
    repo: ModelRepository,
    counting: TracingStore,
    orders: multiprocessing.connection.Connection,
    experiment: str,
    artifact_id: str,
) -> None:
    before = counting.counts()
    if counting.timeline is not None:
        counting.timeline.clear()
    began = time.perf_counter()
    version: int | None = None
    error: str | None = None
    try:
        version = repo.register_model(experiment, artifact_id, f"host-{index}").version
    except Exception as failure:
        error = f"{type(failure).__name__}: {failure}"[:300]
    ended = time.perf_counter()
    after = counting.counts()
    orders.send(
        {
            "ok": True,
            "began": began,
            "ended": ended,
            "version": version,
            "error": error,
            "transactions": after["transactions"] - before["transactions"],
            "conflicts": after["conflicts"] - before["conflicts"],
            "throttled": after["throttled"] - before["throttled"],
            "timeline": counting.timeline,
        }
    )


def _round_trips(store: MetadataStore, partition: str, version_doc: dict[str, Any], samples: int) -> list[float]:
    """`samples` serial round trips: read the counter, then one conditional 3-row transaction."""
    found = []
    for _ in range(samples):
        began = time.perf_counter()
        counter = store.get(partition, tables.COUNTER_ROW)
        sequence = int(counter.data.get("sequence", 0)) + 1 if counter is not None else 1
        store.transact(
            [
                Put.over(counter, partition, tables.COUNTER_ROW, {"latest": sequence, "sequence": sequence}),
                Put(partition, tables.version_row(sequence), version_doc, if_absent=True),
                Put(partition, tables.event_row(sequence), version_doc, if_absent=True),
            ]
        )
        found.append(time.perf_counter() - began)
    return found


# --- in the benchmark ------------------------------------------------------------------------------


@dataclass
class Race:
    """One burst: N hosts released at once, each registering one version."""

    backend: str
    hosts: int
    policy: str
    round_number: int
    seconds: float  # from the release until the last host had its answer
    latencies: list[float]
    versions: list[int]
    errors: list[str]
    transactions: int
    conflicts: int
    throttled: int
    listed: list[int] | None = None  # the experiment's versions, listed after the race
    released: float = 0.0
    timelines: list[Any] | None = None

    @property
    def successes(self) -> int:
        return len(self.versions)

    @property
    def verified(self) -> bool:
        """The experiment holds exactly versions 1..k for the k hosts that succeeded, each the version
        its host was told (a host that gave up left nothing behind)."""
        return self.listed == list(range(1, self.successes + 1)) == self.versions


class Hosts:
    """N host processes on one target, forked from a server that has imported the SDKs once."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.count = count
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bench.racing", "boto3", "azure.data.tables"])
        self._start = context.Barrier(count + 1)
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._processes: list[Any] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_host, args=(index, target, theirs, self._start), name=f"racing-host-{index}", daemon=True
            )
            process.start()
            theirs.close()
            self._pipes.append(ours)
            self._processes.append(process)

    def _ask(self, index: int, order: Any) -> dict[str, Any]:
        self._pipes[index].send(order)
        return self._answer(index)

    def _answer(self, index: int) -> dict[str, Any]:
        pipe = self._pipes[index]
        if not pipe.poll(ANSWER_SECONDS):
            raise RuntimeError(f"racing host {index} did not answer within {ANSWER_SECONDS:g} s")
        answer: dict[str, Any] = pipe.recv()
        if not answer.get("ok", True):
            raise RuntimeError(f"racing host {index} failed:\n{answer['error']}")
        return answer

    def warm(self, seeder: ModelRepository, prefix: str) -> None:
        """Each host registers into an experiment of its own (`<prefix>-<host>`), once per policy:
        its clients connect, its bytes are pinned, its policies see an uncontended round trip."""
        for index in range(self.count):
            experiment = f"{prefix}-{index}"
            [artifact_id] = seed(seeder, experiment, [index])
            self._pipes[index].send(("warm", (experiment, artifact_id)))
        for index in range(self.count):
            self._answer(index)

    def race(self, policy: str, experiment: str, artifact_ids: list[str], round_number: int) -> Race:
        for index, pipe in enumerate(self._pipes):
            pipe.send(("race", (policy, experiment, artifact_ids[index])))
        for index in range(self.count):
            self._answer(index)  # ready: every host waits at the barrier
        self._start.wait()
        released = time.perf_counter()
        answers = [self._answer(index) for index in range(self.count)]
        return Race(
            backend=self.target.backend,
            hosts=self.count,
            policy=policy,
            round_number=round_number,
            # A busy machine may let hosts run before this process reads the clock after the release.
            seconds=max(a["ended"] for a in answers) - min(released, *(a["began"] for a in answers)),
            latencies=[a["ended"] - a["began"] for a in answers],
            versions=sorted(a["version"] for a in answers if a["version"] is not None),
            errors=[a["error"] for a in answers if a["error"]][:5],
            transactions=sum(a["transactions"] for a in answers),
            conflicts=sum(a["conflicts"] for a in answers),
            throttled=sum(a["throttled"] for a in answers),
            released=min(released, *(a["began"] for a in answers)),
            timelines=[a["timeline"] for a in answers] if answers[0]["timeline"] is not None else None,
        )

    def round_trips(self, version_doc: dict[str, Any], samples: int) -> list[float]:
        partition = tables.experiment_partition(f"round-trip-{uuid.uuid4().hex[:12]}")
        found: list[float] = self._ask(0, ("round-trips", (partition, version_doc, samples)))["samples"]
        return found

    def close(self) -> None:
        for pipe in self._pipes:
            with suppress(OSError):  # a host that died has closed its end
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self._pipes:
            pipe.close()


@contextmanager
def hosts(target: Target, count: int) -> Iterator[Hosts]:
    pool = Hosts(target, count)
    try:
        yield pool
    finally:
        pool.close()


def version_document(repo: ModelRepository, experiment: str) -> dict[str, Any]:
    """A real version row's document, so the serial round trips write what a registration writes."""
    item = repo.metadata.get(tables.experiment_partition(experiment), tables.version_row(1))
    assert item is not None, f"{experiment} has no version 1"
    return dict(item.data)


def run_races(
    target: Target, counts: list[int], rounds: int, policies: list[str], samples: int = 40
) -> list[dict[str, Any]]:
    """Every (hosts, policy) race `rounds` times, policies alternated (AB, BA, ...), with the serial
    round trip measured before each race on the same target; one summary per (hosts, policy)."""
    seeder = ModelRepository(target.artifact_store(), target.metadata())
    summaries = []
    for count in counts:
        races: list[Race] = []
        trips: list[float] = []
        with hosts(target, count) as pool:
            warm = f"warm-{count}-{uuid.uuid4().hex[:6]}"
            pool.warm(seeder, warm)
            document = version_document(seeder, f"{warm}-0")
            pool.round_trips(document, 5)  # the scratch partition's first write pays for its creation
            for round_number in range(rounds):
                order = policies if round_number % 2 == 0 else list(reversed(policies))
                for policy in order:
                    experiment = f"race-{count}-{policy}-{round_number}-{uuid.uuid4().hex[:6]}"
                    artifact_ids = seed(seeder, experiment, list(range(count)))
                    # The experiment exists, as one being registered into does: its counter row is there.
                    seeder.describe_experiment(experiment, "racing hosts", "bench")
                    trips += pool.round_trips(document, samples)
                    race = pool.race(policy, experiment, artifact_ids, round_number)
                    race.listed = versions(seeder, experiment)
                    races.append(race)
                    if (trace := os.environ.get("BENCH_RACING_TRACE")) and race.timelines is not None:
                        with open(trace, "a", encoding="utf-8") as out:
                            out.write(
                                json.dumps(
                                    {
                                        "race": experiment,
                                        "released": race.released,
                                        "round_trip": statistics.median(trips),
                                        "timelines": race.timelines,
                                    }
                                )
                                + "\n"
                            )
        summaries += [summary(target.backend, count, policy, races, trips) for policy in policies]
    seeder.metadata.close()
    return summaries


def summary(backend: str, count: int, policy: str, races: list[Race], trips: list[float]) -> dict[str, Any]:
    """One row: throughput against the serial limit, attempts, p99 against 4x the serial time."""
    mine = [race for race in races if race.policy == policy]
    round_trip = statistics.median(trips)
    seconds = sum(race.seconds for race in mine)
    successes = sum(race.successes for race in mine)
    latencies = [latency for race in mine for latency in race.latencies]
    transactions = sum(race.transactions for race in mine)
    throughput = successes / seconds if seconds > 0 else float("nan")
    serial_seconds = count * round_trip
    p99 = percentile(latencies, 0.99)
    return {
        "backend": backend,
        "hosts": count,
        "policy": policy,
        "races": len(mine),
        "operations": count * len(mine),
        "failures": count * len(mine) - successes,
        "seconds": round(seconds, 4),
        "throughput": round(throughput, 2),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(max(latencies, default=float("nan")) * 1000, 3),
        "race_seconds": [round(race.seconds, 4) for race in mine],
        "round_trip_ms": round(round_trip * 1000, 3),
        "round_trip_p90_ms": round(percentile(trips, 0.9) * 1000, 3),
        "round_trips": len(trips),
        "serial_limit": round(1 / round_trip, 2),
        "of_limit": round(throughput * round_trip, 3),
        "serial_ms": round(serial_seconds * 1000, 1),
        "p99_of_serial": round(p99 / serial_seconds, 3),
        "transactions": transactions,
        "conflicts": sum(race.conflicts for race in mine),
        "throttled": sum(race.throttled for race in mine),
        "attempts_per_success": round(transactions / successes, 3) if successes else None,
        "success_rate": successes / (count * len(mine)) if mine else 0.0,
        "verified": all(race.verified for race in mine),
        "errors": [error for race in mine for error in race.errors][:5],
        "pid": os.getpid(),
    }
