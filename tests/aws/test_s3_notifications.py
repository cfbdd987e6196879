"""S3 notification records → ObjectCreated, on the sample events and on awkward keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import pytest

from modelrepo.adapters.aws import MalformedNotification, object_created_events
from tests.aws.conftest import load_event

AWKWARD_NAMES = [
    "with space.bin",
    "plus+sign.bin",
    "percent%2Bplus.bin",
    "模型/ñame.onnx",
    "hash#and?query.pt",
    "tilde~and'quote\".bin",
    "line\nfeed\r.bin",  # moto's server cannot store it; S3 can, and notifies it encoded
    "n" * 1024,
]


def notification(key: str, **object_fields: Any) -> str:
    event = load_event("s3-put.json")
    event["Records"][0]["s3"]["object"].update({"key": quote_plus(key), **object_fields})
    return json.dumps(event)


def test_the_sample_put_event_becomes_one_object_created() -> None:
    [created] = object_created_events(json.dumps(load_event("s3-put.json")))
    assert created.key == "exp1/run1/model+v1.onnx"
    assert (created.etag, created.size, created.sequencer) == (
        "0123456789abcdef0123456789abcdef",
        1024,
        "0A1B2C3D4E5F678901",
    )
    assert created.uploaded_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert created.actor == "s3:EXAMPLE"


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_keys_decode_to_exactly_the_uploaded_name(name: str) -> None:
    [created] = object_created_events(notification(f"exp1/run1/{name}"))
    assert created.key == f"exp1/run1/{name}"


def test_moto_and_s3_encodings_of_a_slash_agree() -> None:
    [s3_style] = object_created_events(notification("exp1/run1/a b").replace("exp1%2Frun1%2F", "exp1/run1/"))
    [moto_style] = object_created_events(notification("exp1/run1/a b"))
    assert s3_style.key == moto_style.key == "exp1/run1/a b"


def test_the_test_event_and_other_event_types_announce_nothing() -> None:
    assert object_created_events(load_event("sqs-s3-test-event.json")["Records"][0]["body"]) == []
    removed = load_event("s3-put.json")
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert object_created_events(json.dumps(removed)) == []


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[]",
        json.dumps({"Records": "nope"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        notification("exp1/run1/m.bin", eTag=""),
        notification("exp1/run1/m.bin", size="many"),
        notification("exp1/run1/m.bin").replace("m.bin", "%FF.bin"),  # not UTF-8
    ],
)
def test_malformed_notifications_are_refused_so_that_they_end_in_the_dlq(body: str) -> None:
    with pytest.raises(MalformedNotification):
        object_created_events(body)
