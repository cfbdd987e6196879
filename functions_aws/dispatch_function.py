"""Publishes the outbox: DynamoDB stream records of event rows -> CloudEvents on the EventBridge bus.

The event source mapping (template.yaml, `DispatchStream`) passes only INSERTs of `evt~` rows, one
shard at a time (`ParallelizationFactor: 1`), so a batch holds each experiment's events in commit
order. Each record is published by `StreamDispatch`: a failed one, and every later record of its
partition in the batch, is reported back (partial batch response); Lambda retries the batch from
the lowest failed record, so the events of an experiment are put on the bus in order, at least
once. After `MaximumRetryAttempts` Lambda sends the batch's position to the on-failure queue;
invoking this function with that record (the queue message's body) publishes the batch again.
"""

from __future__ import annotations

from typing import Any

# Before anything that imports pydantic (the core does): when pydantic is already imported, Powertools'
# batch utilities import its parser's models of every event source, which this function never uses
# and which cost its cold start (bench/README.md, Cold start; tests/aws/test_cold_path.py).
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

# isort: split
import aws_bootstrap
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo.adapters.aws import (
    EventHeldBack,
    FailedStreamBatch,
    StreamDispatch,
    is_failed_stream_batch,
    replay_failed_batch,
)
from modelrepo.errors import ModelRepoError

logger = Logger()
metrics = Metrics()
# A batch whose every record failed is reported like any partial failure (Lambda retries it from
# its first record) rather than raised: raising would make Lambda bisect it, and a bus that refuses
# everything would then cost a retry budget per record instead of one per batch.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


class Batch:
    """One invocation's records: which partitions already failed decides what is held back."""

    def __init__(self) -> None:
        self.dispatch = StreamDispatch(aws_bootstrap.publisher())
        self.partitions: set[str] = set()  # whose index rows to bring up to date after the batch

    def publish(self, record: DynamoDBRecord) -> None:
        sequence = record.dynamodb.sequence_number if record.dynamodb else None
        try:
            streamed = self.dispatch.publish(record.raw_event)
        except EventHeldBack as held:
            metrics.add_metric(name="EventsHeldBack", unit=MetricUnit.Count, value=1)
            logger.info("event held back; Lambda delivers it again after the failed one", detail=held.detail)
            raise
        except Exception:
            metrics.add_metric(name="EventsFailed", unit=MetricUnit.Count, value=1)
            logger.exception("event not published; Lambda retries from here", stream_sequence=sequence)
            raise
        if streamed is None:
            logger.debug("not an event row's insert; nothing to publish", stream_sequence=sequence)
            return
        self.partitions.add(streamed.partition)
        metrics.add_metric(name="EventsPublished", unit=MetricUnit.Count, value=1)
        logger.info(
            "event published",
            event_id=streamed.event.id,
            type=streamed.event.type,
            partition=streamed.partition,
            sequence=streamed.event.sequence,
        )


def replay(event: dict[str, Any]) -> dict[str, Any]:
    """An operator's replay of a batch Lambda gave up on (the on-failure queue's message body)."""
    batch = FailedStreamBatch.from_invocation_record(event)
    report = replay_failed_batch(aws_bootstrap.stream_reader(), aws_bootstrap.publisher(), batch)
    metrics.add_metric(name="EventsReplayed", unit=MetricUnit.Count, value=report.published)
    logger.info("failed batch replayed", **report.to_json())
    return report.to_json()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_failed_stream_batch(event):
        return replay(event)
    batch = Batch()
    answer = dict(
        process_partial_response(event=event, record_handler=batch.publish, processor=processor, context=context)
    )
    follow_in_the_index(batch.partitions)
    return answer


def follow_in_the_index(partitions: set[str]) -> None:
    """The experiments listing and search follow the partitions whose events went out. A failure here
    is logged, not raised: the events are delivered, and the reconcile sweep repairs the index."""
    for partition in sorted(partitions):
        try:
            aws_bootstrap.index().drain(partition)
        except ModelRepoError:
            logger.exception("the index could not follow this partition yet", partition=partition)
