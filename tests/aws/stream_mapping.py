"""The events path under test: moto's DynamoDB stream read like Lambda's event source mapping, and
a consumer reading what an EventBridge rule delivered to its SQS queue.

`StreamEventSourceMapping` reads the table's stream (GetShardIterator / GetRecords on the moto
server), applies the template's filter, and invokes the dispatcher with batches shaped as Lambda
sends them (`events/dynamodb-stream-insert.json`), with the template's settings: a partial batch
response moves the checkpoint to just before the lowest failed record and the rest is retried; a
function error (the process died, the handler raised) retries the batch, bisected; after
`MaximumRetryAttempts` the batch is described in the on-failure queue
(`events/dynamodb-stream-on-failure.json`) and skipped.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from moto.events.models import EventPattern

from modelrepo.adapters.aws import EVENTBRIDGE_SOURCE
from tests.aws.cfn import load_template
from tests.aws.conftest import load_event
from tests.fixtures.consumers import first_copies, sequences

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


class FunctionError(Exception):
    """The invocation failed as a whole: the handler raised, or its process died."""


def sequence_number(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def filter_passes(pattern: str, record: dict[str, Any]) -> bool:
    """Whether an event source mapping's filter pattern passes a record. Lambda's event filtering
    uses EventBridge's pattern language; moto's EventBridge implements it (prefix included)."""
    return EventPattern.load(pattern).matches_event(cast(Any, record))


@dataclass
class StreamEventSourceMapping:
    streams: Any
    stream_arn: str
    invoke: Invoke
    sqs: Any
    on_failure_queue: str
    settings: dict[str, Any] = field(
        default_factory=lambda: load_template()["Resources"]["DispatchStream"]["Properties"]
    )
    checkpoint: int = 0  # the sequence number of the last record done with
    invocations: list[list[int]] = field(default_factory=list)  # the stream sequence numbers of each batch
    responses: list[dict[str, Any] | None] = field(default_factory=list)  # None: a function error
    discarded: list[list[int]] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.settings["BatchSize"])

    def passes(self, record: dict[str, Any]) -> bool:
        return any(filter_passes(rule["Pattern"], record) for rule in self.settings["FilterCriteria"]["Filters"])

    # --- reading the stream ----------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every record of the stream after the checkpoint that the filter lets through, as Lambda shapes it."""
        [shard] = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        iterator = self.streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found: list[dict[str, Any]] = []
        while True:
            page = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            found += [self._lambda_record(r) for r in page["Records"]]
            iterator = page["NextShardIterator"]
        return [r for r in found if sequence_number(r) > self.checkpoint and self.passes(r)]

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A GetRecords record in the shape of the Lambda event: epoch seconds, the stream's ARN."""
        shaped = copy.deepcopy(record)
        created = shaped["dynamodb"]["ApproximateCreationDateTime"]
        if isinstance(created, datetime):
            shaped["dynamodb"]["ApproximateCreationDateTime"] = int(created.timestamp())
        shaped["eventSourceARN"] = self.stream_arn
        return shaped

    # --- invoking the function -------------------------------------------------------------------

    def drain(self, *, max_invocations: int = 500) -> None:
        """Deliver everything the stream holds after the checkpoint."""
        while records := self.records():
            self._deliver(records[: self.batch_size], retries=0)
            if len(self.invocations) > max_invocations:
                raise AssertionError("the stream did not drain")

    def _deliver(self, batch: list[dict[str, Any]], retries: int) -> None:
        while batch:
            self.invocations.append([sequence_number(r) for r in batch])
            try:
                response = self.invoke({"Records": batch})
            except FunctionError:
                self.responses.append(None)
                if self.settings["BisectBatchOnFunctionError"] and len(batch) > 1:
                    half = len(batch) // 2  # a split does not count as a retry
                    self._deliver(batch[:half], retries)
                    self._deliver(batch[half:], retries)
                    return
                failed_from = 0
            else:
                self.responses.append(response)
                failed = {int(f["itemIdentifier"]) for f in (response or {}).get("batchItemFailures") or []}
                if not failed:
                    self.checkpoint = sequence_number(batch[-1])
                    return
                failed_from = min(i for i, r in enumerate(batch) if sequence_number(r) in failed)
            if failed_from:
                self.checkpoint = sequence_number(batch[failed_from - 1])
            batch = batch[failed_from:]  # retried from the lowest failed record
            retries += 1
            if retries > self.settings["MaximumRetryAttempts"]:
                self._discard(batch, retries)
                return

    def _discard(self, batch: list[dict[str, Any]], invocations: int) -> None:
        """Describe the batch in the on-failure destination and move on, as Lambda does."""
        record = load_event("dynamodb-stream-on-failure.json")
        record["requestContext"].update(requestId=str(uuid.uuid4()), approximateInvokeCount=invocations)
        record["timestamp"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        [shard] = self.streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        record["DDBStreamBatchInfo"].update(
            shardId=shard["ShardId"],
            startSequenceNumber=batch[0]["dynamodb"]["SequenceNumber"],
            endSequenceNumber=batch[-1]["dynamodb"]["SequenceNumber"],
            batchSize=len(batch),
            streamArn=self.stream_arn,
        )
        self.sqs.send_message(QueueUrl=self.on_failure_queue, MessageBody=json.dumps(record))
        self.discarded.append([sequence_number(r) for r in batch])
        self.checkpoint = sequence_number(batch[-1])


@dataclass
class Consumer:
    """Reads the CloudEvents an EventBridge rule delivered to an SQS queue, and dedupes them by id."""

    sqs: Any
    queue_url: str
    received: list[dict[str, Any]] = field(default_factory=list)  # every CloudEvent, duplicates included

    def receive(self) -> list[dict[str, Any]]:
        while True:
            found = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30)
            messages = found.get("Messages", [])
            if not messages:
                return self.received
            for message in messages:
                envelope = json.loads(message["Body"])
                event = envelope["detail"]
                assert envelope["source"] == EVENTBRIDGE_SOURCE
                assert envelope["detail-type"] == event["type"]
                self.received.append(event)
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def unique(self) -> list[dict[str, Any]]:
        """What a consumer keeps: each event once, in arrival order."""
        return first_copies(self.receive())

    def sequences(self, subject_prefix: str) -> list[int]:
        return sequences(self.receive(), subject_prefix)
