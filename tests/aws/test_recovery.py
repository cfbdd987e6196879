"""Recovery on the moto server: the CLI lists and replays the SQS dead-letter queue, and the
scheduled reconcile function heals what the event path missed."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo.adapters.aws import DynamoDBMetadataStore
from modelrepo.cli import main
from modelrepo.recovery import Reconciler
from tests.aws.conftest import MAX_RECEIVE_COUNT, EventSourceMapping, MotoClock, Stack, api_event, call_api, load_event
from tests.aws.lambda_worker import FakeLambdaContext
from tests.aws.sdk_faults import ACCESS_DENIED, SdkFaults, always
from tests.aws.test_event_path import artifacts_of, audit_of
from tests.fixtures.aws import aws_client


def cli(stack: Stack, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """`modelrepo <args> --backend aws --json`, with exactly the environment the functions get."""
    capsys.readouterr()  # what the functions logged before
    code = main([*args, "--backend", "aws", "--json"], environ=dict(stack.environment))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def sweep(context: FakeLambdaContext | None = None) -> dict[str, Any]:
    """One scheduled invocation of the reconcile function."""
    import reconcile_function

    report: dict[str, Any] = reconcile_function.handler(
        load_event("eventbridge-schedule.json"), context or FakeLambdaContext()
    )
    return report


def lose_notifications(stack: Stack) -> list[str]:
    """Take every waiting notification off the queue unhandled, as if the function had crashed
    between the object write and the table write; answer the upload notifications' bodies."""
    bodies = []
    while messages := stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
            if "Records" in json.loads(message["Body"]):
                bodies.append(message["Body"])
    return bodies


def table_documents(stack: Stack) -> dict[tuple[str, str], Any]:
    """Every row of the table as (partition, row) → document; ETags left out."""
    rows: dict[tuple[str, str], Any] = {}
    for page in aws_client("dynamodb", stack.endpoint).get_paginator("scan").paginate(TableName=stack.table):
        for item in page["Items"]:
            rows[(item["pk"]["S"], item["rk"]["S"])] = json.loads(item["doc"]["S"])
    return rows


def put(stack: Stack, key: str, data: bytes) -> None:
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=data)


# --- dead letters --------------------------------------------------------------------------------


def test_a_dead_lettered_upload_is_listed_and_replayed_by_the_cli(
    stack: Stack, trigger: EventSourceMapping, capsys: pytest.CaptureFixture[str]
) -> None:
    import aws_bootstrap

    # The table refuses the record function (a broken permission, say): the upload is dead-lettered.
    metadata = aws_bootstrap.repository().metadata
    assert isinstance(metadata, DynamoDBMetadataStore)
    with SdkFaults(metadata._client, always(ACCESS_DENIED)).installed() as denied:
        put(stack, "exp1/run7/model.bin", b"weights")
        trigger.drain()
    assert denied.injected["AccessDeniedException"] == MAX_RECEIVE_COUNT
    assert sum("run7" in body for body in trigger.failures) == MAX_RECEIVE_COUNT  # bounded attempts
    put(stack, "exp1/run8/next.bin", b"next")  # the next upload is recorded while the letter waits
    trigger.drain()
    assert [a["name"] for a in artifacts_of("run8")] == ["next.bin"]
    assert artifacts_of("run7") == []

    [letter] = cli(stack, capsys, "dead-letters")
    assert letter["keys"] == ["exp1/run7/model.bin"]
    assert letter["source"] == "sqs:" + stack.dead_letter_url.rsplit("/", 1)[-1]
    assert "failed on it repeatedly" in letter["detail"]
    assert len(stack.messages(stack.dead_letter_url)) == 1, "listing leaves the letter in the queue"

    [replayed] = cli(stack, capsys, "replay")
    assert (replayed["handle"], replayed["replayed"], replayed["outcomes"]) == (letter["handle"], True, ["recorded"])
    [artifact] = artifacts_of("run7")
    assert artifact["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert stack.messages(stack.dead_letter_url) == [], "the replayed letter is gone"
    assert cli(stack, capsys, "dead-letters") == []
    assert cli(stack, capsys, "replay") == []
    assert [e["action"] for e in audit_of("run7")] == ["artifact.recorded"]


def test_a_poison_message_is_listed_with_its_reason_and_kept_by_replay(
    stack: Stack, trigger: EventSourceMapping, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{not an S3 notification")
    trigger.drain()

    [letter] = cli(stack, capsys, "dead-letters")
    assert letter["keys"] == [] and letter["detail"].startswith("not an S3 upload notification")
    [replayed] = cli(stack, capsys, "replay")
    assert replayed["replayed"] is False and "cannot be decoded" in replayed["error"]
    assert [m["Body"] for m in stack.messages(stack.dead_letter_url)] == ["{not an S3 notification"]


def test_the_aws_backend_needs_the_functions_settings(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    environment = {k: v for k, v in stack.environment.items() if k != "MODELREPO_DEAD_LETTER_QUEUE_URL"}
    capsys.readouterr()
    assert main(["dead-letters", "--backend", "aws"], environ=environment) == 1
    assert "dead_letter_queue_url" in capsys.readouterr().err


# --- the scheduled reconcile sweep ---------------------------------------------------------------


def test_the_sweep_records_a_lost_upload_and_flags_a_vanished_object(
    stack: Stack, trigger: EventSourceMapping, capsys: pytest.CaptureFixture[str]
) -> None:
    put(stack, "exp1/run1/kept.bin", b"kept")
    put(stack, "exp1/run1/deleted.bin", b"deleted")
    trigger.drain()
    put(stack, "exp1/run2/unseen.bin", b"unseen")  # its notification is lost: nothing records it
    assert len(lose_notifications(stack)) == 1
    stack.s3.delete_object(Bucket=stack.uploads_bucket, Key="exp1/run1/deleted.bin")

    report = sweep()

    assert report == {
        "objectsScanned": 2,
        "recorded": 1,
        "rejected": 0,
        "runsChecked": 2,
        "vanished": 1,
        "indexed": 0,  # runs' events are not the index's: the uploads listed their experiment
        "released": 0,
        "complete": True,
    }
    [unseen] = artifacts_of("run2")
    assert (unseen["name"], unseen["sha256"]) == ("unseen.bin", hashlib.sha256(b"unseen").hexdigest())
    assert [(e["action"], e["actor"]) for e in audit_of("run2")] == [("artifact.recorded", "reconcile")]
    flags = {a["name"]: a["vanishedAt"] for a in artifacts_of("run1")}
    assert flags["kept.bin"] is None and flags["deleted.bin"] is not None
    listed = call_api(api_event("GET", "/api/experiments"))[2]["items"]
    assert [e["experimentId"] for e in listed] == ["exp1"]

    before = table_documents(stack)
    again = sweep()
    assert (again["recorded"], again["vanished"], again["complete"]) == (0, 0, True)
    assert table_documents(stack) == before, "a second sweep changes nothing"
    by_operator = cli(stack, capsys, "reconcile")  # the same sweep, run by hand
    assert (by_operator["recorded"], by_operator["vanished"], by_operator["complete"]) == (0, 0, True)
    assert table_documents(stack) == before


def test_the_sweep_keeps_within_the_invocation_and_the_next_one_resumes(
    stack: Stack, trigger: EventSourceMapping
) -> None:
    put(stack, "exp1/run1/model.bin", b"weights")
    lose_notifications(stack)

    import reconcile_function

    for remaining, budget in ((900_000, 780), (30_000, 24)):
        context = cast(LambdaContext, FakeLambdaContext(remaining_millis=remaining))
        assert reconcile_function.budget_seconds(context) == budget
    hurried = sweep(FakeLambdaContext(remaining_millis=0))
    assert (hurried["complete"], hurried["recorded"]) == (False, 0)
    assert artifacts_of("run1") == []
    assert sweep()["recorded"] == 1
    assert [a["name"] for a in artifacts_of("run1")] == ["model.bin"]


def test_the_sweep_records_a_lost_overwrite_made_in_the_same_second(
    stack: Stack, trigger: EventSourceMapping, moto_clock: MotoClock
) -> None:
    """Events time an upload to the millisecond, the sweep's listing only to the second."""
    moto_clock.now = moto_clock.now.replace(microsecond=50_000)  # 50 ms into a second
    put(stack, "exp1/run3/model.bin", b"first")
    trigger.drain()
    moto_clock.advance(milliseconds=700)  # the same second
    put(stack, "exp1/run3/model.bin", b"second")
    first = next(body for body in reversed(trigger.delivered) if "run3" in body)
    [second] = lose_notifications(stack)
    times = [json.loads(body)["Records"][0]["eventTime"] for body in (first, second)]
    assert times[0][:19] == times[1][:19] and times[0] < times[1], times

    assert sweep()["recorded"] == 1
    [artifact] = artifacts_of("run3")
    assert artifact["sha256"] == hashlib.sha256(b"second").hexdigest()

    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=first)  # a late redelivery of the first
    trigger.drain()
    assert artifacts_of("run3") == [artifact]


def test_a_sweep_alongside_live_uploads_records_each_upload_once(stack: Stack, trigger: EventSourceMapping) -> None:
    import aws_bootstrap

    keys = [f"exp1/run{n % 4}/model-{n:02d}.bin" for n in range(40)]
    stop = threading.Event()
    reports = []

    def sweeper() -> None:  # another Lambda container, sweeping in small pages
        reconciler = Reconciler(aws_bootstrap.repository(), page_size=5)
        while not stop.is_set():
            reports.append(reconciler.run())

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for n, key in enumerate(keys):
            put(stack, key, key.encode())
            if n % 3 == 0:
                trigger.poll_once()
        trigger.drain()
    finally:
        stop.set()
        thread.join(timeout=60)
    reports.append(Reconciler(aws_bootstrap.repository()).run())

    assert trigger.failures == []
    recorded = []
    for run in range(4):
        artifacts = artifacts_of(f"run{run}")
        assert all(a["sha256"] == hashlib.sha256(a["key"].encode()).hexdigest() for a in artifacts)
        assert all(a["vanishedAt"] is None for a in artifacts)
        recorded += [a["key"] for a in artifacts]
        entries = audit_of(f"run{run}")
        assert sorted(e["details"]["key"] for e in entries) == sorted(a["key"] for a in artifacts), "once each"
    assert sorted(recorded) == sorted(keys)
    by_sweep = sum(r.recorded for r in reports)
    assert sum(e["actor"] == "reconcile" for run in range(4) for e in audit_of(f"run{run}")) == by_sweep
    assert len(reports) > 1 and reports[-1].complete and reports[-1].recorded == 0
