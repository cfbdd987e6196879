"""S3 event notifications, as delivered in SQS messages, turned into the core's ObjectCreated.

This is the one place that knows the S3 notification shape: keys arrive form-URL-encoded (`+` for a
space) and are decoded with `unquote_plus`; `sequencer` orders events of one key when S3 sends it
(moto does not); the `eTag` names the object version the core will read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

from modelrepo.events import ObjectCreated

MAX_ACTOR_CHARS = 128


class MalformedNotification(ValueError):
    """The message is not an S3 notification we can act on; retrying it cannot help."""


def is_test_event(payload: Any) -> bool:
    """S3 sends `s3:TestEvent` once when a notification configuration is saved."""
    return isinstance(payload, dict) and payload.get("Event") == "s3:TestEvent"


def object_created_events(body: str) -> list[ObjectCreated]:
    """The uploads announced by one SQS message body; [] for S3's test event and other event types."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise MalformedNotification("the message body is not JSON") from None
    if is_test_event(payload):
        return []
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise MalformedNotification("the message body is not an S3 event notification (no Records)")
    try:
        return [_translate(record) for record in S3Event(payload).records if _is_object_created(record)]
    except (KeyError, TypeError, ValueError, AttributeError) as problem:
        raise MalformedNotification(f"an S3 record is malformed ({type(problem).__name__}: {problem})") from None


def _is_object_created(record: S3EventRecord) -> bool:
    return str(record.event_name).startswith("ObjectCreated:")


def _translate(record: S3EventRecord) -> ObjectCreated:
    obj = record.s3.get_object
    etag = obj.etag.strip('"')
    if not etag:
        raise ValueError("the record has no eTag")
    uploaded_at = datetime.fromisoformat(record.event_time)
    if uploaded_at.tzinfo is None:
        raise ValueError("eventTime has no time zone")
    return ObjectCreated(
        key=unquote_plus(obj.key, errors="strict"),
        etag=etag,
        size=obj.size,
        uploaded_at=uploaded_at,
        sequencer=obj.get("sequencer") or None,
        actor=_actor(record),
    )


def _actor(record: S3EventRecord) -> str:
    principal = (record.get("userIdentity") or {}).get("principalId")
    return f"s3:{principal}"[:MAX_ACTOR_CHARS] if principal else "s3-upload"


def request_id(body: str) -> str | None:
    """S3's x-amz-request-id of the upload, to correlate our logs with S3's."""
    try:
        payload = json.loads(body)
        return str(payload["Records"][0]["responseElements"]["x-amz-request-id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
