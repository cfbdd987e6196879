"""Events out on Azure: the outbox's events published to an Event Grid topic by the dispatcher
functions, on Azurite, with a loopback server in the place of the topic (Azurite has no Event Grid).

The publisher is checked against what the SDK sends (batch mode, every attribute, the credential,
TLS for tokens); the functions end to end (50 registrations from 8 writers, tags, deploys and a
rollback; every event arrives, in order per experiment after dedupe); and the crashes: a dispatcher
killed with SIGKILL while the topic holds its batch, a hint that could not be sent, a topic that
refuses (parked, listed and replayed with `modelrepo dead-letters|replay --backend azure`).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.pipeline.transport import RequestsTransport
from azure.functions.timer import TimerRequest
from azure.identity import DefaultAzureCredential

from functions_azure import bootstrap
from modelrepo.adapters.azure import (
    EVENT_GRID_SUBSCRIBER,
    EVENT_TOPIC_KEY_SETTING,
    EVENT_TOPIC_SETTING,
    EVENTS_QUEUE_SETTING,
    AzureSettings,
    AzureStorage,
    EventGridPublisher,
    EventHints,
    partition_of_hint,
)
from modelrepo.cli import main
from modelrepo.dispatch import DeliveryFailed, Dispatcher
from modelrepo.errors import InvalidInput
from modelrepo.outbox import CloudEvent
from tests.azure.conftest import AzureApp
from tests.azure.host import REPO, blob_created, http, user_function
from tests.azure.topic import (
    BATCH_CONTENT_TYPE,
    LoopbackTopic,
    QueueTriggerHost,
    StaticTokenCredential,
    certificate_for_loopback,
    serve_topic,
)
from tests.fixtures.azure import Azurite, unique_name

TOPIC_KEY = "loopback-topic-key"
KEY = "exp1/run1/model.onnx"


def cloud_event(sequence: int, *, data: dict[str, Any] | None = None, subject: str = "") -> CloudEvent:
    return CloudEvent(
        id=f"id-{sequence}",
        source="https://acct.table.core.windows.net/modelrepo",
        type="io.modelrepo.version.registered",
        subject=subject or f"experiments/exp1/versions/{sequence}",
        time=datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        data=data if data is not None else {"experimentId": "exp1", "version": sequence, "tags": {"ü": "é"}},
        sequence=sequence,
        actor="alice",
    )


def as_sent(event: CloudEvent) -> dict[str, Any]:
    """What the topic must receive for `event`: its structured JSON, every attribute."""
    return event.to_json()


def normalized(received: dict[str, Any]) -> dict[str, Any]:
    """The received event with its time in our serialization (the SDK writes the same instant)."""
    time = datetime.fromisoformat(received["time"].replace("Z", "+00:00"))
    return {**received, "time": CloudEvent.model_validate({**received, "time": time}).to_json()["time"]}


# --- the publisher against the loopback topic ------------------------------------------------------


@pytest.fixture
def topic() -> Iterator[LoopbackTopic]:
    with serve_topic(LoopbackTopic(key=TOPIC_KEY)) as served:
        yield served


def test_a_batch_goes_out_as_one_cloudevents_batch_with_every_attribute(topic: LoopbackTopic) -> None:
    events = [cloud_event(n) for n in (1, 2, 3)]
    publisher = EventGridPublisher.connect(topic.url, AzureKeyCredential(TOPIC_KEY))
    publisher.publish(events)
    assert topic.refused == []
    [publish] = topic.accepted
    assert publish.headers["content-type"] == BATCH_CONTENT_TYPE
    assert publish.headers["aeg-sas-key"] == TOPIC_KEY  # a development topic's key: http is allowed
    assert [normalized(e) for e in publish.events] == [as_sent(e) for e in events]
    assert publisher.subscriber == EVENT_GRID_SUBSCRIBER


def test_entra_id_tokens_go_to_the_topic_over_tls_only(tmp_path: Path) -> None:
    ca, tls = certificate_for_loopback(tmp_path)
    credential = StaticTokenCredential("entra-token-for-the-app-identity")
    with serve_topic(LoopbackTopic(token=credential.token), tls) as secure:
        publisher = EventGridPublisher.connect(secure.url, credential, connection_verify=str(ca))
        publisher.publish([cloud_event(1)])
        assert secure.refused == [] and len(secure.accepted) == 1
        assert secure.accepted[0].headers["authorization"] == f"Bearer {credential.token}"
        assert credential.scopes == [("https://eventgrid.azure.net/.default",)]
        # The same credential towards http is refused by the SDK before anything is sent.
        plain = EventGridPublisher.connect(secure.url.replace("https://", "http://"), credential)
        with pytest.raises(DeliveryFailed, match=r"TLS|https"):
            plain.publish([cloud_event(2)])
        assert len(secure.accepted) == 1 and secure.seen == 1


def test_a_batch_above_the_request_limit_is_cut_in_order_and_an_oversized_event_is_refused(
    topic: LoopbackTopic,
) -> None:
    blob = "x" * 300_000  # three of these fit one request, four do not
    events = [cloud_event(n, data={"notes": blob}) for n in range(1, 8)]
    publisher = EventGridPublisher.connect(topic.url, AzureKeyCredential(TOPIC_KEY))
    publisher.publish(events)
    assert topic.refused == []
    assert [[e["sequence"] for e in p.events] for p in topic.accepted] == [[1, 2], [3, 4], [5, 6], [7]]
    assert [normalized(e) for e in topic.events()] == [as_sent(e) for e in events]

    too_big = cloud_event(8, data={"notes": "x" * 1_000_000})
    with pytest.raises(DeliveryFailed, match=r"event 8 .* Event Grid takes at most"):
        publisher.publish([cloud_event(9), too_big])
    assert len(topic.accepted) == 4  # nothing of that batch was sent


@pytest.mark.parametrize(("status", "expected"), [(400, "HTTP 400"), (401, "HTTP 401"), (403, "HTTP 403")])
def test_a_refusal_is_delivery_failed_naming_the_answer(topic: LoopbackTopic, status: int, expected: str) -> None:
    topic.status = status
    publisher = EventGridPublisher.connect(topic.url, AzureKeyCredential(TOPIC_KEY))
    with pytest.raises(DeliveryFailed, match=f"events 1-2 of 'experiments/exp1/versions/1': {expected}"):
        publisher.publish([cloud_event(1), cloud_event(2)])


def test_an_unreachable_topic_is_delivery_failed() -> None:
    with serve_topic(LoopbackTopic(key=TOPIC_KEY)) as gone:
        url = gone.url
    publisher = EventGridPublisher.connect(url, AzureKeyCredential(TOPIC_KEY), retry_total=0)
    with pytest.raises(DeliveryFailed, match="ServiceRequestError"):
        publisher.publish([cloud_event(1)])


def test_hints_name_partitions_and_nothing_else() -> None:
    assert partition_of_hint(b'{"partition":"exp~exp1"}') == "exp~exp1"
    assert partition_of_hint('{"partition": "run~run-7"}') == "run~run-7"
    for bad in (b"exp~exp1", b"[]", b'{"partition": 3}', b'{"partition": "rejections"}', b'{"partition": "exp~a/b"}'):
        with pytest.raises(ValueError):
            partition_of_hint(bad)


# --- settings --------------------------------------------------------------------------------------

IDENTITY = {
    "ModelRepoStorage__blobServiceUri": "https://account.blob.core.windows.net/",
    "ModelRepoStorage__tableServiceUri": "https://account.table.core.windows.net/",
    "ModelRepoStorage__queueServiceUri": "https://account.queue.core.windows.net/",
    "MODELREPO_UPLOADS_CONTAINER": "uploads",
}
DEVELOPMENT = {"ModelRepoStorage": "UseDevelopmentStorage=true", "MODELREPO_UPLOADS_CONTAINER": "uploads"}
TOPIC = "https://evgt-events-x.swedencentral-1.eventgrid.azure.net/api/events"


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({**IDENTITY, EVENT_TOPIC_SETTING: TOPIC.replace("https", "http")}, "must be https"),
        ({**IDENTITY, EVENT_TOPIC_SETTING: TOPIC, EVENT_TOPIC_KEY_SETTING: "k"}, "development only"),
        ({**DEVELOPMENT, EVENT_TOPIC_KEY_SETTING: "k"}, f"{EVENT_TOPIC_SETTING} is not"),
        ({**DEVELOPMENT, EVENT_TOPIC_SETTING: "evgt.example/api/events"}, "event_topic_endpoint"),
        ({**DEVELOPMENT, EVENT_TOPIC_SETTING: "https://evgt example/api/events"}, "event_topic_endpoint"),
        ({**IDENTITY, EVENTS_QUEUE_SETTING: "Events"}, "events_queue"),
        ({**IDENTITY, EVENTS_QUEUE_SETTING: "model--events"}, "'--'"),
        ({**IDENTITY, EVENTS_QUEUE_SETTING: "e" * 57}, "events_queue"),  # `<name>-poison` must fit 63
        ({**IDENTITY, "MODELREPO_EVENTS_SWEEP_SCHEDULE": "*/5 * * * *"}, "events_sweep_schedule"),
        ({**IDENTITY, "MODELREPO_EVENT_SOURCE": "two words"}, "event_source"),
    ],
)
def test_bad_event_settings_are_refused_with_a_reason(environ: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidInput, match="invalid app settings") as refused:
        AzureSettings.from_environment(environ)
    assert says in refused.value.detail


def test_in_azure_the_app_identity_publishes_and_the_source_is_the_table_url() -> None:
    settings = AzureSettings.from_environment({**IDENTITY, EVENT_TOPIC_SETTING: TOPIC})
    runtime = bootstrap.build(settings)  # builds clients only; nothing is called yet
    assert runtime.repository.context.source == "https://account.table.core.windows.net/modelrepo"
    assert isinstance(runtime.events.credential, DefaultAzureCredential)
    assert runtime.events.dispatcher.subscriber == EVENT_GRID_SUBSCRIBER
    named = AzureSettings.from_environment({**IDENTITY, "MODELREPO_EVENT_SOURCE": "urn:modelrepo:prod"})
    assert bootstrap.build(named).repository.context.source == "urn:modelrepo:prod"
    # No topic: the hints and the index subscriber still run, but no Event Grid dispatcher.
    assert [d.subscriber for d in bootstrap.build(named).events.subscribers] == ["index"]


# --- hints --------------------------------------------------------------------------------------------


class HoldingTransport(RequestsTransport):  # type: ignore[misc]  # azure-core's transports are untyped
    """The SDK's own transport, holding every request until released."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()
        self.release = threading.Event()

    def send(self, request: Any, **kwargs: Any) -> Any:
        self.arrived.set()
        assert self.release.wait(60)
        return super().send(request, **kwargs)


def test_a_hint_never_holds_up_the_commit_and_hints_for_one_partition_coalesce(azurite: Azurite) -> None:
    name = unique_name("hints-")
    azurite.storage().queues.create_queue(name)
    transport = HoldingTransport()
    held = AzureStorage.from_connection_string(azurite.connection_string, transport=transport)
    hints = EventHints.on(lambda: held.queues, name)
    try:
        hints.notify("exp~exp1")  # returns while the queue has not answered
        assert transport.arrived.wait(30)
        for partition in ("exp~exp1", "exp~exp2", "exp~exp1", "run~run1"):
            hints.notify(partition)
        assert not hints.flush(0)  # the first hint is still on its way
        transport.release.set()
        assert hints.flush(60)
    finally:
        transport.release.set()
        hints.close()
    queue = azurite.storage().queues.get_queue_client(name)
    sent = [json.loads(base64.b64decode(m.content)) for m in queue.peek_messages(max_messages=32)]
    assert sent == [{"partition": p} for p in ("exp~exp1", "exp~exp1", "exp~exp2", "run~run1")]


# --- the dispatcher functions on Azurite -----------------------------------------------------------


@dataclass
class EventsApp:
    app: AzureApp
    topic: LoopbackTopic
    trigger: QueueTriggerHost
    queue: str

    def dispatcher(self) -> Dispatcher:
        events = bootstrap.runtime().events
        assert events is not None
        return events.dispatcher

    def flush_hints(self) -> None:
        """Wait until the hints of every commit so far are on the queue (they are sent off the
        request's path)."""
        events = bootstrap.runtime().events
        assert events is not None
        assert events.hints.flush(60)

    def deliver(self) -> int:
        """What the Functions host does with the hint queue: run `deliver_events` until it is empty."""
        self.flush_hints()
        return self.trigger.drain()


@pytest.fixture
def events_app(azure_app: AzureApp, topic: LoopbackTopic, monkeypatch: pytest.MonkeyPatch) -> EventsApp:
    queue = unique_name("events-")
    settings = {EVENT_TOPIC_SETTING: topic.url, EVENT_TOPIC_KEY_SETTING: TOPIC_KEY, EVENTS_QUEUE_SETTING: queue}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    azure_app.settings.update(settings)
    bootstrap.reset()
    bootstrap.runtime()  # with a connection string, the first hint creates the hint queue
    return EventsApp(azure_app, topic, QueueTriggerHost(azure_app.queues, queue), queue)


def body_of(response: Any) -> Any:
    return json.loads(response.get_body())


def seed(app: AzureApp) -> str:
    app.upload(KEY, b"weights")
    app.host.deliver(blob_created(app.service, app.uploads, KEY))
    [artifact] = body_of(http("GET", "/api/runs/run1/artifacts"))["items"]
    return str(artifact["runArtifactId"])


def register(run_artifact_id: str, who: str) -> int:
    body = {"experimentId": "exp1", "runArtifactId": run_artifact_id, "registeredBy": who}
    answer = http("POST", "/api/register", body=body)
    assert answer.status_code == 201, answer.get_body()
    return int(body_of(answer)["version"])


def register_many(run_artifact_id: str, count: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda n: register(run_artifact_id, f"writer{n % 8}"), range(count)))


def tags_deploys_and_a_rollback() -> None:
    for version in (3, 7):
        body = {"value": "candidate", "by": "bob"}
        assert http("PUT", f"/api/experiments/exp1/models/{version}/tags/stage", body=body).status_code == 200
    assert http("DELETE", "/api/experiments/exp1/models/3/tags/stage", params={"by": "bob"}).status_code == 200
    for version in (7, 9):
        deploy = {"version": version, "target": "production", "deployedBy": "carol"}
        assert http("POST", "/api/experiments/exp1/deployments", body=deploy).status_code == 201
    rollback = http("POST", "/api/experiments/exp1/deployments/production/rollback", body={"deployedBy": "dave"})
    assert rollback.status_code == 201


def committed(experiment: str = "exp1") -> list[dict[str, Any]]:
    page = body_of(http("GET", f"/api/experiments/{experiment}/events", params={"limit": "1000"}))
    assert page["nextCursor"] is None
    return list(page["items"])


def sweep() -> None:
    user_function("sweep_events")(TimerRequest(past_due=False))


@pytest.mark.slow
def test_every_event_reaches_the_topic_in_order_per_experiment_after_dedupe(events_app: EventsApp) -> None:
    run_artifact_id = seed(events_app.app)
    assert sorted(register_many(run_artifact_id, 50)) == list(range(1, 51))
    tags_deploys_and_a_rollback()
    expected = committed()
    assert [e["sequence"] for e in expected] == list(range(1, 50 + 3 + 3 + 1))

    assert events_app.deliver() > 0  # the hints the functions enqueued after their commits
    topic = events_app.topic
    assert topic.refused == [] and events_app.trigger.failures == []
    assert topic.sequences("experiments/exp1/") == [e["sequence"] for e in expected]
    assert topic.sequences("runs/run1/") == [1]
    # Every attribute arrives as committed: what the replay API answers is what the topic got.
    received = {e["id"]: normalized(e) for e in topic.unique()}
    assert [received[e["id"]] for e in expected] == expected
    source = bootstrap.runtime().repository.context.source
    assert source == f"{events_app.app.tables.url}/{events_app.app.table}"
    assert {e["source"] for e in topic.unique()} == {source}
    types = Counter(e["type"] for e in topic.unique())
    assert types == {
        "io.modelrepo.artifact.recorded": 1,
        "io.modelrepo.version.registered": 50,
        "io.modelrepo.version.tagged": 2,
        "io.modelrepo.version.untagged": 1,
        "io.modelrepo.deployment.created": 3,
    }
    # The sweep finds nothing left; the cursors stand at the end of each partition.
    published = len(topic.events())
    sweep()
    assert len(topic.events()) == published
    assert events_app.dispatcher().position("exp~exp1") == len(expected)


CRASH_SCRIPT = """
import sys
import azure.functions as func
import function_app

functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
functions["deliver_events"].get_user_function()(func.QueueMessage(id="crash", body=sys.argv[1].encode()))
"""


@pytest.mark.slow
def test_a_dispatcher_killed_mid_batch_loses_nothing_and_the_sweep_resumes(events_app: EventsApp) -> None:
    topic, dispatcher = events_app.topic, events_app.dispatcher()
    run_artifact_id = seed(events_app.app)
    register_many(run_artifact_id, 10)
    events_app.deliver()
    assert topic.sequences("experiments/exp1/") == list(range(1, 11))
    assert dispatcher.position("exp~exp1") == 10

    register_many(run_artifact_id, 40)
    tags_deploys_and_a_rollback()
    expected = [e["sequence"] for e in committed()]
    # The dispatcher function runs in its own process; the topic takes its batch and holds the answer.
    topic.hold, topic.arrived = threading.Event(), threading.Event()
    before = len(topic.accepted)
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, '{"partition":"exp~exp1"}'],
        cwd=REPO,
        env={**os.environ, **events_app.app.settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert topic.arrived.wait(60), "the dispatcher's batch reached the topic"
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    held, topic.hold = topic.hold, None
    held.set()  # the answer goes to a process that no longer exists
    assert [e["sequence"] for e in topic.accepted[-1].events] == expected[10:]  # the topic has the batch
    assert dispatcher.position("exp~exp1") == 10  # ... but the cursor never moved

    sweep()  # the next scheduled sweep (or the next hint) resumes from the cursor
    assert topic.refused == []
    assert topic.sequences("experiments/exp1/") == expected
    assert dispatcher.position("exp~exp1") == len(expected)
    # Since the crash: the held batch and its redelivery (same ids), nothing of the accepted batches.
    since = [e for p in topic.accepted[before:] for e in p.events]
    assert [e["sequence"] for e in since] == expected[10:] * 2
    assert [e["id"] for e in since[: len(expected) - 10]] == [e["id"] for e in since[len(expected) - 10 :]]

    # The hints enqueued meanwhile, and one for a new change, find the partition delivered or deliver it.
    tag = http("PUT", "/api/experiments/exp1/models/1/tags/stage", body={"value": "done", "by": "erin"})
    assert tag.status_code == 200
    events_app.deliver()
    assert topic.sequences("experiments/exp1/") == [*expected, len(expected) + 1]
    assert topic.sequences("runs/run1/") == [1]


@pytest.mark.slow
def test_a_commit_whose_hint_cannot_be_sent_still_succeeds_and_the_sweep_delivers_it(
    events_app: EventsApp, caplog: pytest.LogCaptureFixture
) -> None:
    run_artifact_id = seed(events_app.app)
    events_app.deliver()
    events_app.app.queues.delete_queue(events_app.queue)  # every hint from here on fails
    assert register(run_artifact_id, "alice") == 1
    events_app.flush_hints()
    assert "the next event sweep delivers its events" in caplog.text
    assert events_app.topic.sequences("experiments/exp1/") == []
    sweep()
    assert events_app.topic.sequences("experiments/exp1/") == [1]


def test_a_hint_that_is_not_ours_is_dropped_without_a_retry(events_app: EventsApp) -> None:
    queue = events_app.app.queues.get_queue_client(events_app.queue)
    queue.create_queue()  # nothing was committed yet, so no hint has created it
    queue.send_message("bm90IGEgaGludA==")  # "not a hint"
    assert events_app.deliver() == 1
    assert events_app.trigger.failures == [] and events_app.topic.seen == 0


def test_a_batch_refused_halfway_is_parked_at_its_start_and_redelivered_in_full(events_app: EventsApp) -> None:
    run_artifact_id = seed(events_app.app)
    register_many(run_artifact_id, 6)
    events_app.deliver()
    register_many(run_artifact_id, 6)  # events 7-12 wait
    topic = events_app.topic
    # The same store and topic, requests cut small: the batch 7-12 goes out in several requests.
    small = EventGridPublisher.connect(topic.url, AzureKeyCredential(TOPIC_KEY), request_bytes=2_500)
    dispatcher = Dispatcher(bootstrap.runtime().repository.metadata, small)
    topic.statuses = [200, 400]  # the first request is accepted, the second refused
    assert dispatcher.drain("exp~exp1") == 0
    [first] = [p.events for p in topic.accepted if p.events[0]["sequence"] == 7]
    assert 0 < len(first) < 6
    [parked] = dispatcher.parked()
    assert (parked.partition, parked.sequence, parked.attempts) == ("exp~exp1", 7, 1)
    assert "HTTP 400" in parked.error and dispatcher.position("exp~exp1") == 6

    assert dispatcher.drain("exp~exp1", force=True) == 6  # from the batch's start, not from where it broke
    assert dispatcher.parked() == [] and dispatcher.position("exp~exp1") == 12
    assert topic.sequences("experiments/exp1/") == list(range(1, 13))
    copies = Counter(e["sequence"] for e in topic.events() if e["subject"].startswith("experiments/"))
    assert [n for n in range(7, 13) if copies[n] == 2] == [e["sequence"] for e in first]


def cli(app: AzureApp, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main([*args, "--backend", "azure", "--json"], environ=dict(app.settings))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_a_refusing_topic_parks_the_partition_listed_and_replayed_by_the_cli(
    events_app: EventsApp, capsys: pytest.CaptureFixture[str]
) -> None:
    events_app.topic.status = 403  # e.g. the app's identity lacks EventGrid Data Sender
    seed(events_app.app)
    events_app.deliver()
    assert events_app.trigger.failures == []  # a refused delivery parks; the invocation succeeds
    [letter] = [row for row in cli(events_app.app, capsys, "dead-letters") if row["source"] == "delivery"]
    assert letter["keys"] == ["run~run1 from event 1"] and "HTTP 403" in letter["detail"]
    assert letter["handle"] == f"{EVENT_GRID_SUBSCRIBER}/run~run1"

    events_app.topic.status = 200
    [replayed] = [row for row in cli(events_app.app, capsys, "replay") if row["handle"] == letter["handle"]]
    assert replayed["replayed"] is True
    sweep()  # the parked partition is due at once
    assert events_app.topic.sequences("runs/run1/") == [1]
    assert [row for row in cli(events_app.app, capsys, "dead-letters") if row["source"] == "delivery"] == []
