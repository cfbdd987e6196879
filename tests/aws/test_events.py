"""Events out on AWS, end to end on moto: the real API and record functions commit changes, the
table's stream (moto's DynamoDB Streams) feeds the real dispatcher function in batches as Lambda's
event source mapping would, the dispatcher puts CloudEvents on the stack's EventBridge bus, a rule
sends them to an SQS queue, and a consumer reads them there: every committed event, deduplicated by
`id`, each experiment's `sequence` 1..N in order, also when the dispatcher dies mid-batch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from modelrepo.adapters.aws import EVENTBRIDGE_SOURCE, AwsSettings, build_publisher
from modelrepo.errors import InvalidInput
from tests.aws import event_workers
from tests.aws.cfn import ROOT, load_template
from tests.aws.conftest import EVENTS, EventSourceMapping, Stack, api_event, call_api, load_event
from tests.aws.fault_proxy import running_proxy
from tests.aws.lambda_worker import FakeLambdaContext
from tests.aws.stream_mapping import Consumer, FunctionError, StreamEventSourceMapping
from tests.fixtures.aws import aws_client, unique_name

WEIGHTS = b"candidate weights " * 64
CANDIDATE_RULE = EVENTS / "eventbridge-rule-candidate.json"


@dataclass
class EventsStack:
    """The stack plus what template.yaml adds for events: the stream, the bus, the on-failure queue;
    and what a subscriber adds: a rule sending every modelrepo event to its queue."""

    stack: Stack
    stream_arn: str
    bus: str
    failures_queue: str
    consumer: Consumer
    events: Any
    streams: Any

    def subscribe(self, pattern: str) -> Consumer:
        """Another rule on the bus, with its own queue."""
        queue = self.stack.sqs.create_queue(QueueName=unique_name("subscriber"))["QueueUrl"]
        arn = self.stack.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        rule = unique_name("rule")
        self.events.put_rule(Name=rule, EventBusName=self.bus, EventPattern=pattern)
        self.events.put_targets(Rule=rule, EventBusName=self.bus, Targets=[{"Id": "queue", "Arn": arn}])
        return Consumer(self.stack.sqs, queue)

    def mapping(self, invoke: Any = None) -> StreamEventSourceMapping:
        return StreamEventSourceMapping(
            self.streams, self.stream_arn, invoke or invoke_in_process, self.stack.sqs, self.failures_queue
        )


@pytest.fixture
def events_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[EventsStack]:
    import aws_bootstrap

    dynamodb = aws_client("dynamodb", stack.endpoint)
    view = load_template()["Resources"]["MetadataTable"]["Properties"]["StreamSpecification"]["StreamViewType"]
    dynamodb.update_table(TableName=stack.table, StreamSpecification={"StreamEnabled": True, "StreamViewType": view})
    stream_arn = dynamodb.describe_table(TableName=stack.table)["Table"]["LatestStreamArn"]
    events = aws_client("events", stack.endpoint)
    bus = unique_name("bus")
    events.create_event_bus(Name=bus)
    failures = stack.sqs.create_queue(QueueName=unique_name("dispatch-failures"))["QueueUrl"]
    stack.environment["MODELREPO_EVENT_BUS"] = bus
    monkeypatch.setenv("MODELREPO_EVENT_BUS", bus)
    aws_bootstrap.publisher.cache_clear()
    aws_bootstrap.stream_reader.cache_clear()
    ready = EventsStack(
        stack, stream_arn, bus, failures, Consumer(stack.sqs, ""), events, aws_client("dynamodbstreams", stack.endpoint)
    )
    ready.consumer = ready.subscribe(json.dumps({"source": [EVENTBRIDGE_SOURCE]}))
    yield ready
    aws_bootstrap.publisher.cache_clear()
    aws_bootstrap.stream_reader.cache_clear()


def invoke_in_process(event: dict[str, Any]) -> dict[str, Any]:
    import dispatch_function

    try:
        answer: dict[str, Any] = dispatch_function.handler(event, FakeLambdaContext())
    except Exception as error:
        raise FunctionError(repr(error)) from error
    return answer


# --- changes, through the real functions ---------------------------------------------------------


def recorded_artifact(stack: Stack, key: str) -> str:
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=WEIGHTS)
    EventSourceMapping(stack).drain()
    status, _, body = call_api(api_event("GET", f"/api/runs/{key.split('/')[1]}/artifacts"))
    assert status == 200, body
    [artifact] = [a for a in body["items"] if a["experimentId"] == key.split("/", maxsplit=1)[0]]
    run_artifact_id: str = artifact["runArtifactId"]
    return run_artifact_id


def register_event(experiment: str, run_artifact_id: str, who: str) -> dict[str, Any]:
    body = {"experimentId": experiment, "runArtifactId": run_artifact_id, "registeredBy": who}
    return api_event("POST", "/api/register", body=body)


def register(experiment: str, run_artifact_id: str, who: str = "alice") -> int:
    status, _, body = call_api(register_event(experiment, run_artifact_id, who))
    assert status == 201, body
    version: int = body["version"]
    return version


def tag(experiment: str, version: int, key: str, value: str) -> None:
    path = f"/api/experiments/{experiment}/models/{version}/tags/{key}"
    status, _, body = call_api(api_event("PUT", path, body={"value": value, "by": "bob"}))
    assert status == 200, body


def busy_day(stack: Stack, run_artifact_id: str) -> None:
    """50 registrations of exp1 from 8 concurrent writers (Lambda containers, as processes), then
    tags, two deploys and a rollback."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.aws.lambda_worker"])  # as test_api_function does
    series = [[register_event("exp1", run_artifact_id, f"writer{w}")] * (7 if w < 2 else 6) for w in range(8)]
    barrier, results = context.Barrier(len(series)), context.Queue()
    workers = [
        context.Process(target=event_workers.register_series, args=(stack.environment, events, barrier, results))
        for events in series
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=180) for _ in range(sum(map(len, series)))]
    for worker in workers:
        worker.join(timeout=30)
    assert [a.get("error") for a in answers] == [None] * 50
    assert sorted(json.loads(a["body"])["version"] for a in answers) == list(range(1, 51))

    tag("exp1", 3, "stage", "candidate")
    tag("exp1", 7, "stage", "candidate")
    status, _, _ = call_api(api_event("DELETE", "/api/experiments/exp1/models/3/tags/stage", query={"by": "bob"}))
    assert status == 200
    for version in (7, 9):
        deploy = {"version": version, "target": "production", "deployedBy": "carol"}
        assert call_api(api_event("POST", "/api/experiments/exp1/deployments", body=deploy))[0] == 201
    rollback = api_event("POST", "/api/experiments/exp1/deployments/production/rollback", body={"deployedBy": "dave"})
    assert call_api(rollback)[0] == 201


def committed(path: str) -> list[dict[str, Any]]:
    """The events the table holds (the outbox), read through the API's replay route."""
    status, _, body = call_api(api_event("GET", path, query={"limit": "1000"}))
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


# --- the promises --------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_committed_change_reaches_the_bus_once_per_id_in_order_per_experiment(
    events_stack: EventsStack,
) -> None:
    stack = events_stack.stack
    busy_day(stack, recorded_artifact(stack, "exp1/run1/model.onnx"))
    expected = committed("/api/experiments/exp1/events")
    assert [e["sequence"] for e in expected] == list(range(1, 50 + 3 + 3 + 1))

    mapping = events_stack.mapping()
    mapping.drain()

    consumer = events_stack.consumer
    assert consumer.unique() == [*committed("/api/runs/run1/events"), *expected]  # the stream's order
    assert consumer.sequences("experiments/exp1/") == list(range(1, 57))
    assert consumer.sequences("runs/run1/") == [1]
    assert len(consumer.received) == len(consumer.unique())  # nothing failed, so nothing came twice
    # Each event names this repository as its source: the table, by default.
    assert {e["source"] for e in consumer.unique()} == {f"urn:modelrepo:aws:{stack.table}"}
    types = [e["type"] for e in consumer.unique()]
    assert types.count("io.modelrepo.version.registered") == 50
    assert types.count("io.modelrepo.version.tagged") == 2
    assert types.count("io.modelrepo.version.untagged") == 1
    assert types.count("io.modelrepo.deployment.created") == 3
    assert types.count("io.modelrepo.artifact.recorded") == 1
    # Only event rows reached the function (the template's filter), in batches of its BatchSize.
    assert sum(map(len, mapping.invocations)) == 57
    assert mapping.discarded == []


@pytest.mark.slow
def test_a_dispatcher_killed_mid_batch_loses_nothing_and_keeps_order(events_stack: EventsStack, tmp_path: Path) -> None:
    """SIGKILL of the dispatcher's process right after EventBridge accepted its 6th event: Lambda
    counts the invocation as failed and delivers the batch again (bisected); the consumer gets
    the first six twice, dedupes them by id, and sees every event in order."""
    stack = events_stack.stack
    run_artifact_id = recorded_artifact(stack, "exp1/run1/model.onnx")
    for n in range(12):
        register("exp1", run_artifact_id, f"writer{n % 3}")
    tag("exp1", 4, "stage", "candidate")
    deploy = {"version": 4, "target": "staging", "deployedBy": "carol"}
    assert call_api(api_event("POST", "/api/experiments/exp1/deployments", body=deploy))[0] == 201
    expected = committed("/api/experiments/exp1/events")
    assert len(expected) == 14

    with running_proxy(stack.endpoint) as proxy:
        proxy.withhold_for = 0.0
        crash = KillAt(put_events=6)
        proxy.decide = crash.decide
        environment = {**stack.environment, "AWS_ENDPOINT_URL": proxy.url}
        mapping = events_stack.mapping(lambda event: crash.invoke(event, environment, tmp_path))
        mapping.drain()

    assert crash.killed == [-signal.SIGKILL]
    assert mapping.responses[0] is None  # the first invocation died
    consumer = events_stack.consumer
    assert consumer.sequences("experiments/exp1/") == list(range(1, 15))
    assert consumer.sequences("runs/run1/") == [1]
    assert [e["id"] for e in consumer.unique() if e["subject"].startswith("experiments/")] == [
        e["id"] for e in expected
    ]
    # The six accepted before the kill (the run's event and five of exp1) came again.
    assert len(consumer.received) == len(consumer.unique()) + 6
    assert mapping.discarded == []


class KillAt:
    """Runs each invocation in its own process; kills the first one with SIGKILL right after
    EventBridge (moto, behind the proxy) accepted its `put_events`-th PutEvents, before it hears so."""

    def __init__(self, put_events: int) -> None:
        self.put_events = put_events
        self.seen = 0
        self.victim: int | None = None
        self.killed: list[int] = []

    def decide(self, operation: str, token: str | None, applied: bool) -> bool:
        if operation != "PutEvents" or self.victim is None:
            return False
        self.seen += 1
        if self.seen < self.put_events:
            return False
        os.kill(self.victim, signal.SIGKILL)
        self.victim = None
        return True  # the answer is withheld: it would reach a dead process

    def invoke(self, event: dict[str, Any], environment: dict[str, str], folder: Path) -> dict[str, Any]:
        path = folder / f"batch-{len(self.killed)}-{os.urandom(4).hex()}.json"
        path.write_text(json.dumps(event), encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.aws.event_workers", str(path)],
            cwd=ROOT,
            env={**os.environ, **environment, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not self.killed:
            self.victim = process.pid  # armed before the process may send anything
        out, err = process.communicate("go\n", timeout=120)
        if process.returncode != 0:
            self.killed.append(process.returncode)
            raise FunctionError(f"the dispatcher's process ended with {process.returncode}: {err[-2000:]}")
        answer: dict[str, Any] = json.loads(out.splitlines()[-1])
        return answer


def failing_entries(client: Any, fails: Any) -> Any:
    """Answers PutEvents calls chosen by `fails(cloud_event)` with a refused entry, as EventBridge
    does when it cannot take one (HTTP 200, FailedEntryCount 1); the rest go to moto."""

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        [entry] = json.loads(request.body)["Entries"]
        if not fails(json.loads(entry["Detail"])):
            return None
        body = {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}]}
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        return AWSResponse(request.url, 200, headers, _Raw(json.dumps(body).encode()))

    client.meta.events.register("before-send.events.PutEvents", before_send, unique_id="test-failing-entries")
    return before_send


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_a_refused_event_is_not_overtaken_by_later_events_of_its_experiment(events_stack: EventsStack) -> None:
    """EventBridge refuses exp1's second event once. exp1's later events in the batch are held back
    and reported with it; exp2's go on. Lambda's retry from the refused one completes both in order."""
    import aws_bootstrap

    stack = events_stack.stack
    first = recorded_artifact(stack, "exp1/run1/model.onnx")
    second = recorded_artifact(stack, "exp2/run2/model.onnx")
    for _ in range(3):
        register("exp1", first)
        register("exp2", second)
    refused: list[str] = []

    def once(event: dict[str, Any]) -> bool:
        if event["subject"] == "experiments/exp1/versions/2" and not refused:
            refused.append(event["id"])
            return True
        return False

    failing_entries(aws_bootstrap.publisher().client, once)
    mapping = events_stack.mapping()
    mapping.drain()

    # The first invocation reported exp1's events 2 and 3 (refused, held back), nothing of exp2.
    first_batch = dict(zip(mapping.invocations[0], batch_records(mapping, 0), strict=True))
    response = mapping.responses[0]
    assert response is not None
    failed = [first_batch[int(f["itemIdentifier"])] for f in response["batchItemFailures"]]
    assert [(e["subject"], e["sequence"]) for e in failed] == [
        ("experiments/exp1/versions/2", 2),
        ("experiments/exp1/versions/3", 3),
    ]
    consumer = events_stack.consumer
    assert consumer.sequences("experiments/exp1/") == [1, 2, 3]
    assert consumer.sequences("experiments/exp2/") == [1, 2, 3]
    # What arrived of exp1 before the retry was only its first event: nothing overtook the refused one.
    exp1 = [e["sequence"] for e in consumer.received if e["subject"].startswith("experiments/exp1/")]
    assert exp1 == [1, 2, 3]
    assert refused and len(mapping.invocations) == 2


def batch_records(mapping: StreamEventSourceMapping, index: int) -> list[dict[str, Any]]:
    """The CloudEvents of the records of the mapping's `index`-th invocation (read back from the stream)."""
    by_sequence: dict[int, dict[str, Any]] = {}
    [shard] = mapping.streams.describe_stream(StreamArn=mapping.stream_arn)["StreamDescription"]["Shards"]
    iterator = mapping.streams.get_shard_iterator(
        StreamArn=mapping.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    while records := (page := mapping.streams.get_records(ShardIterator=iterator))["Records"]:
        for record in records:
            if record["dynamodb"]["Keys"]["rk"]["S"].startswith("evt~"):
                document = json.loads(record["dynamodb"]["NewImage"]["doc"]["S"])
                by_sequence[int(record["dynamodb"]["SequenceNumber"])] = document["event"]
        iterator = page["NextShardIterator"]
    return [by_sequence[s] for s in mapping.invocations[index]]


def test_a_batch_given_up_on_is_described_in_the_failure_queue_and_replayed_from_it(
    events_stack: EventsStack,
) -> None:
    """The bus refuses everything: after MaximumRetryAttempts the batch's position lands in the
    on-failure queue. Invoking the dispatcher with that message's body (as an operator would with
    `aws lambda invoke`) publishes its events, in order."""
    import aws_bootstrap
    import dispatch_function

    stack = events_stack.stack
    run_artifact_id = recorded_artifact(stack, "exp1/run1/model.onnx")
    for _ in range(4):
        register("exp1", run_artifact_id)
    outage = failing_entries(aws_bootstrap.publisher().client, lambda event: True)
    mapping = events_stack.mapping()
    mapping.drain()
    retries = load_template()["Resources"]["DispatchStream"]["Properties"]["MaximumRetryAttempts"]
    assert len(mapping.invocations) == retries + 1
    assert mapping.discarded == [mapping.invocations[0]]
    assert events_stack.consumer.receive() == []

    [message] = stack.sqs.receive_message(QueueUrl=events_stack.failures_queue, MaxNumberOfMessages=10)["Messages"]
    record = json.loads(message["Body"])
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 5
    aws_bootstrap.publisher().client.meta.events.unregister(
        "before-send.events.PutEvents", outage, unique_id="test-failing-entries"
    )

    report = dispatch_function.handler(record, FakeLambdaContext())
    assert (report["published"], report["failed"]) == (5, [])
    assert report["skipped"] > 0  # the range also holds the other rows those changes wrote
    consumer = events_stack.consumer
    assert consumer.sequences("experiments/exp1/") == [1, 2, 3, 4]
    assert consumer.sequences("runs/run1/") == [1]

    # A malformed replay request is refused with a reason, not a traceback of the SDK.
    with pytest.raises(ValueError, match="DDBStreamBatchInfo"):
        dispatch_function.handler({"DDBStreamBatchInfo": {"shardId": "x"}}, FakeLambdaContext())


def test_the_documented_candidate_rule_routes_only_versions_tagged_stage_candidate(events_stack: EventsStack) -> None:
    pattern = CANDIDATE_RULE.read_text(encoding="utf-8")
    candidates = events_stack.subscribe(pattern)
    stack = events_stack.stack
    run_artifact_id = recorded_artifact(stack, "exp1/run1/model.onnx")
    for _ in range(3):
        register("exp1", run_artifact_id)
    tag("exp1", 2, "stage", "candidate")
    tag("exp1", 3, "stage", "production")
    tag("exp1", 1, "owner", "alice")
    events_stack.mapping().drain()

    [event] = candidates.unique()
    assert (event["type"], event["subject"]) == ("io.modelrepo.version.tagged", "experiments/exp1/versions/2")
    assert event["data"]["tags"] == {"stage": "candidate"}
    assert len(events_stack.consumer.unique()) == 1 + 3 + 3  # everything else reached the catch-all rule

    # The README shows this very pattern.
    readme = (ROOT / "functions_aws" / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", readme, flags=re.DOTALL)
    assert json.loads(pattern) in [json.loads(block) for block in blocks]


def test_the_sample_stream_event_is_published_as_its_cloudevent(events_stack: EventsStack) -> None:
    """events/dynamodb-stream-insert.json, the record as Lambda sends it, through the real handler."""
    import dispatch_function

    sample = load_event("dynamodb-stream-insert.json")
    answer = dispatch_function.handler(sample, FakeLambdaContext())
    assert answer == {"batchItemFailures": []}
    [event] = events_stack.consumer.unique()
    document = json.loads(sample["Records"][0]["dynamodb"]["NewImage"]["doc"]["S"])
    assert event == document["event"]

    # A record that is not an event row is skipped; a broken event row is reported, not raised.
    counter = json.loads(json.dumps(sample))
    counter["Records"][0]["dynamodb"]["Keys"]["rk"]["S"] = "counter"
    assert dispatch_function.handler(counter, FakeLambdaContext()) == {"batchItemFailures": []}
    broken = json.loads(json.dumps(sample))
    broken["Records"][0]["dynamodb"]["NewImage"]["doc"]["S"] = '{"event": {"id": 1}}'
    assert dispatch_function.handler(broken, FakeLambdaContext()) == {
        "batchItemFailures": [{"itemIdentifier": sample["Records"][0]["dynamodb"]["SequenceNumber"]}]
    }
    assert len(events_stack.consumer.received) == 1


def test_the_event_settings_name_the_repository_and_refuse_bad_values() -> None:
    base = {
        "MODELREPO_UPLOADS_BUCKET": "uploads-bucket",
        "MODELREPO_REGISTRY_BUCKET": "registry-bucket",
        "MODELREPO_TABLE": "modelrepo-MetadataTable-1A2B",
        "MODELREPO_DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dead-letters",
    }
    assert AwsSettings.from_environment(base).source == "urn:modelrepo:aws:modelrepo-MetadataTable-1A2B"
    chosen = {**base, "MODELREPO_EVENT_SOURCE": "https://models.example.com/registry"}
    assert AwsSettings.from_environment(chosen).source == "https://models.example.com/registry"
    arn = "arn:aws:events:us-east-1:123456789012:event-bus/modelrepo-events"
    assert AwsSettings.from_environment({**base, "MODELREPO_EVENT_BUS": arn}).event_bus == arn
    with pytest.raises(InvalidInput, match="event_source"):
        AwsSettings.from_environment({**base, "MODELREPO_EVENT_SOURCE": "not a uri"})
    with pytest.raises(InvalidInput, match="event_bus"):
        AwsSettings.from_environment({**base, "MODELREPO_EVENT_BUS": "bus with spaces"})
    # The dispatcher cannot start without a bus, and says which variable is missing.
    with pytest.raises(InvalidInput, match="MODELREPO_EVENT_BUS"):
        build_publisher(AwsSettings.from_environment(base), base)


def test_the_dispatcher_keeps_the_experiments_listing_and_search(events_stack: EventsStack) -> None:
    """The index subscriber runs in the dispatcher: once the stream's batches went out, the listing
    and the search follow (before that, the listing names the experiment without its summary)."""
    stack = events_stack.stack
    run_artifact_id = recorded_artifact(stack, "exp1/run1/model.onnx")
    for n in range(3):
        assert call_api(register_event("exp1", run_artifact_id, f"writer{n}"))[0] == 201
    tag = api_event("PUT", "/api/experiments/exp1/models/2/tags/stage", body={"value": "candidate", "by": "bob"})
    assert call_api(tag)[0] == 200
    [before] = call_api(api_event("GET", "/api/experiments"))[2]["items"]  # listed, not yet summarised
    assert (before["experimentId"], before["latestVersion"]) == ("exp1", None)
    events_stack.mapping().drain()
    [listed] = call_api(api_event("GET", "/api/experiments"))[2]["items"]
    assert (listed["experimentId"], listed["latestVersion"], listed["versionCount"]) == ("exp1", 3, 3)
    found = call_api(api_event("GET", "/api/search/models", query={"tag.stage": "candidate"}))[2]["items"]
    assert [(m["experimentId"], m["version"]) for m in found] == [("exp1", 2)]
