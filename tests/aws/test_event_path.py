"""End to end on the moto server: real uploads → S3 notification → SQS → the record function."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from boto3.s3.transfer import TransferConfig

from tests.aws.conftest import MAX_RECEIVE_COUNT, EventSourceMapping, MotoClock, Stack, api_event, call_api


def artifacts_of(run_id: str) -> list[dict[str, Any]]:
    status, _, body = call_api(api_event("GET", f"/api/runs/{run_id}/artifacts"))
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


def audit_of(run_id: str) -> list[dict[str, Any]]:
    status, _, body = call_api(api_event("GET", f"/api/runs/{run_id}/audit", query={"limit": "1000"}))
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


def test_an_upload_is_recorded_once_however_often_it_is_delivered(stack: Stack, trigger: EventSourceMapping) -> None:
    data = b"onnx weights \x00\x01" * 1000
    key = "exp1/run1/models/model v1+final.onnx"  # S3 sends 'model+v1%2Bfinal.onnx'
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=data)
    trigger.drain()

    assert trigger.failures == []
    assert any(json.loads(b).get("Event") == "s3:TestEvent" for b in trigger.delivered), "moto sends a test event"
    [artifact] = artifacts_of("run1")
    assert (artifact["key"], artifact["name"]) == (key, "models/model v1+final.onnx")
    assert (artifact["size"], artifact["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    before = audit_of("run1")
    assert [e["action"] for e in before] == ["artifact.recorded"]

    # At-least-once delivery: the very same notification arrives again, twice.
    upload_notification = next(b for b in trigger.delivered if "Records" in json.loads(b))
    for _ in range(2):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=upload_notification)
    trigger.drain()

    assert trigger.failures == []
    assert artifacts_of("run1") == [artifact]
    assert audit_of("run1") == before
    assert stack.messages(stack.dead_letter_url) == []


def test_a_multipart_upload_is_one_artifact(stack: Stack, trigger: EventSourceMapping) -> None:
    data = bytes(range(256)) * (12 * 4096)  # 12 MiB, uploaded in three parts
    stack.s3.upload_fileobj(
        io.BytesIO(data),
        stack.uploads_bucket,
        "exp1/run2/big.bin",
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    trigger.drain()

    notifications = [json.loads(b) for b in trigger.delivered if "Records" in json.loads(b)]
    assert len(notifications) >= 2, "moto announces a multipart upload twice"
    [artifact] = artifacts_of("run2")
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert artifact["etag"].endswith("-3")
    assert [e["action"] for e in audit_of("run2")] == ["artifact.recorded"]


def test_the_newer_upload_wins_when_events_arrive_out_of_order(
    stack: Stack, trigger: EventSourceMapping, moto_clock: MotoClock
) -> None:
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key="exp1/run3/model.bin", Body=b"first")
    moto_clock.advance(milliseconds=10)  # moto's eventTime has millisecond resolution and no sequencer
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key="exp1/run3/model.bin", Body=b"second!")
    trigger.poll_once()  # the test event
    trigger.drain(reverse=True)

    [artifact] = artifacts_of("run3")
    assert artifact["sha256"] == hashlib.sha256(b"second!").hexdigest()
    assert trigger.failures == []


def test_keys_outside_the_layout_are_reported_not_retried(stack: Stack, trigger: EventSourceMapping) -> None:
    for key in ("loose-file.bin", "exp1/run1/../escape.bin", "exp 1/run1/model.bin"):
        stack.s3.put_object(Bucket=stack.uploads_bucket, Key=key, Body=b"x")
    trigger.drain()

    assert trigger.failures == []
    status, _, body = call_api(api_event("GET", "/api/rejections"))
    assert status == 200
    assert sorted(r["key"] for r in body["items"]) == [
        "exp 1/run1/model.bin",
        "exp1/run1/../escape.bin",
        "loose-file.bin",
    ]
    assert stack.messages(stack.dead_letter_url) == []


def test_a_poison_event_ends_in_the_dead_letter_queue_while_the_next_succeeds(
    stack: Stack, trigger: EventSourceMapping
) -> None:
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody="{not an S3 notification")
    stack.s3.put_object(Bucket=stack.uploads_bucket, Key="exp1/run4/model.bin", Body=b"good")
    trigger.drain()

    assert [a["name"] for a in artifacts_of("run4")] == ["model.bin"]
    assert trigger.failures == ["{not an S3 notification"] * MAX_RECEIVE_COUNT  # bounded retries
    [dead] = stack.messages(stack.dead_letter_url)
    assert dead["Body"] == "{not an S3 notification"
    assert stack.messages(stack.queue_url) == []


def test_awkward_keys_are_recorded_under_exactly_their_names(stack: Stack, trigger: EventSourceMapping) -> None:
    names = ["with space.bin", "plus+sign.bin", "percent%2Bplus.bin", "模型/ñame.onnx", "hash#and?query.pt"]
    longest = "n" * (1024 - len("exp1/run5/"))  # S3's limit is 1,024 bytes for the whole key
    for name in [*names, longest]:
        stack.s3.put_object(Bucket=stack.uploads_bucket, Key=f"exp1/run5/{name}", Body=name.encode())
    trigger.drain()

    assert trigger.failures == []
    recorded = {a["name"]: a for a in artifacts_of("run5")}
    assert sorted(recorded) == sorted([*names, longest])
    assert all(a["sha256"] == hashlib.sha256(name.encode()).hexdigest() for name, a in recorded.items())
