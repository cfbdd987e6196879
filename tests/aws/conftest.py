"""The AWS host under test: a stack of moto resources shaped like template.yaml, the functions'
environment pointing at it, and an SQS poller that calls the record function the way Lambda's
event source mapping does (partial batch responses, redelivery, redrive to the dead-letter queue).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws.lambda_worker import POWERTOOLS_ENVIRONMENT, FakeLambdaContext
from tests.fixtures.aws import aws_client, create_bucket, create_table, unique_name

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions_aws"
EVENTS = ROOT / "events"

# Lambda puts the function's CodeUri first on sys.path; the handlers import each other that way.
if str(FUNCTIONS) not in sys.path:
    sys.path.insert(0, str(FUNCTIONS))

MAX_RECEIVE_COUNT = 3


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


@dataclass
class Stack:
    """The resources of template.yaml, on the moto server, and the functions' environment."""

    endpoint: str
    uploads_bucket: str
    registry_bucket: str
    table: str
    queue_url: str
    queue_arn: str
    dead_letter_url: str
    environment: dict[str, str]
    s3: Any = field(repr=False)
    sqs: Any = field(repr=False)

    def messages(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message waiting in a queue, without consuming it."""
        found = self.sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
        )
        return list(found.get("Messages", []))


@pytest.fixture
def stack(moto_endpoint: str, aws_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    s3 = aws_client("s3", moto_endpoint)
    sqs = aws_client("sqs", moto_endpoint)
    uploads, registry, table = create_bucket(moto_endpoint), create_bucket(moto_endpoint), create_table(moto_endpoint)
    dead = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=unique_name("uploads"),
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=uploads,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    environment = {
        **aws_environment,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "MODELREPO_UPLOADS_BUCKET": uploads,
        "MODELREPO_REGISTRY_BUCKET": registry,
        "MODELREPO_TABLE": table,
        "MODELREPO_DEAD_LETTER_QUEUE_URL": dead,
        "MODELREPO_REGISTER_DEADLINE_SECONDS": "25",
        **POWERTOOLS_ENVIRONMENT,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    import aws_bootstrap

    new_container(aws_bootstrap)
    yield Stack(moto_endpoint, uploads, registry, table, queue, queue_arn, dead, environment, s3, sqs)
    new_container(aws_bootstrap)


def new_container(bootstrap: Any) -> None:
    """A new container: settings and clients are built again from the environment."""
    for cached in ("settings", "repository", "api", "publisher", "stream_reader", "index"):
        getattr(bootstrap, cached).cache_clear()


@dataclass
class EventSourceMapping:
    """Polls the uploads queue and invokes the record function like Lambda's SQS trigger.

    Messages the function reports as failed (or all of them, if it raises) become visible again at
    once, so the queue's redrive policy moves a message to the dead-letter queue after
    MAX_RECEIVE_COUNT deliveries.
    """

    stack: Stack
    delivered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def poll_once(self, *, reverse: bool = False) -> int:
        import record_function

        found = self.stack.sqs.receive_message(
            QueueUrl=self.stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30, AttributeNames=["All"]
        )
        messages = list(found.get("Messages", []))
        if not messages:
            return 0
        if reverse:
            messages.reverse()
        event = {"Records": [self._record(m) for m in messages]}
        try:
            response = record_function.handler(event, FakeLambdaContext())
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        except Exception:
            failed = {m["MessageId"] for m in messages}  # the whole batch failed
        for message in messages:
            self.delivered.append(message["Body"])
            if message["MessageId"] in failed:
                self.failures.append(message["Body"])
                self.stack.sqs.change_message_visibility(
                    QueueUrl=self.stack.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            else:
                self.stack.sqs.delete_message(QueueUrl=self.stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def drain(self, *, reverse: bool = False, max_polls: int = 50) -> None:
        for _ in range(max_polls):
            if self.poll_once(reverse=reverse) == 0:
                return
        raise AssertionError("the queue did not drain")

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.stack.queue_arn,
            "awsRegion": "us-east-1",
        }


@pytest.fixture
def trigger(stack: Stack) -> EventSourceMapping:
    return EventSourceMapping(stack)


class MotoClock:
    """moto's S3 clock, set by the test: objects' LastModified and notifications' eventTime.

    Tests about upload times that tie or differ by milliseconds set them instead of sleeping until
    the wall clock is where they need it. Naive UTC, as moto keeps it.
    """

    def __init__(self, now: datetime) -> None:
        self.now = now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def moto_clock(monkeypatch: pytest.MonkeyPatch) -> MotoClock:
    """moto runs in this process (a server thread), so its S3 clock can be replaced for one test."""
    import moto.s3.models
    import moto.s3.notifications
    from moto.core.utils import iso_8601_datetime_with_milliseconds

    clock = MotoClock(datetime.now(UTC).replace(tzinfo=None))
    monkeypatch.setattr(moto.s3.models, "utcnow", lambda: clock.now)
    monkeypatch.setattr(
        moto.s3.notifications,
        "iso_8601_datetime_with_milliseconds",
        lambda value=None: iso_8601_datetime_with_milliseconds(value or clock.now),
    )
    return clock


@pytest.fixture
def function_logs() -> Iterator[io.StringIO]:
    """Everything the functions log (Powertools' structured JSON lines, core logs included)."""
    import api_function

    buffer = io.StringIO()
    handler = api_function.logger.registered_handler
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    handler.setStream(previous)  # type: ignore[attr-defined]


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event, based on events/apigateway-register.json."""
    event = load_event("apigateway-register.json")
    raw = body if isinstance(body, str) or body is None else json.dumps(body)
    all_headers = {"Accept": "application/json", "Host": "abc123.execute-api.us-east-1.amazonaws.com"}
    if raw is not None:
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    event.update(
        {
            "httpMethod": method,
            "path": path,
            "body": raw,
            "isBase64Encoded": False,
            "headers": all_headers,
            "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
            "pathParameters": {"proxy": path.removeprefix("/api/")},
        }
    )
    event["requestContext"] = {**event["requestContext"], "httpMethod": method, "path": f"/prod{path}"}
    return event


def call_api(event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    """Invoke the API function; answer (status, headers, parsed JSON body or raw text)."""
    import api_function

    response = api_function.handler(event, FakeLambdaContext())
    headers = {k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    body = response.get("body") or ""
    content_type = headers.get("Content-Type", "")
    parsed = json.loads(body) if "json" in content_type and body else body
    return response["statusCode"], headers, parsed


def pytest_configure(config: pytest.Config) -> None:
    # A GET answered without a business metric is normal; Powertools warns about it on every flush.
    config.addinivalue_line("filterwarnings", "ignore:No application metrics to publish:UserWarning")
