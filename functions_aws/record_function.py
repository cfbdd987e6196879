"""Records uploads: S3 ObjectCreated → SQS → this function, a batch of messages at a time.

Each message is handled alone; failed ones are reported back to SQS (partial batch response) and
retried until the queue's redrive policy moves them to the dead-letter queue. Keys outside the
layout are recorded as rejections (and logged), which is success, so they are never retried.
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
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo.adapters.aws import object_created_events, s3_request_id
from modelrepo.commands.uploads import Outcome

logger = Logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS)

OUTCOME_METRICS = {
    Outcome.RECORDED: "ArtifactsRecorded",
    Outcome.DUPLICATE: "DuplicateEvents",
    Outcome.STALE: "StaleEvents",
    Outcome.GONE: "VanishedUploads",
    Outcome.REJECTED: "RejectedUploads",
}


def record_message(record: SQSRecord) -> None:
    logger.set_correlation_id(s3_request_id(record.body) or record.message_id)
    logger.append_keys(message_id=record.message_id, receive_count=record.attributes.approximate_receive_count)
    try:
        events = object_created_events(record.body)
        if not events:
            logger.info("no uploads in this message (S3 test event or another event type)")
        for event in events:
            result = aws_bootstrap.repository().record_artifact(event)
            metrics.add_metric(name=OUTCOME_METRICS[result.outcome], unit=MetricUnit.Count, value=1)
            if result.rejection is not None:
                logger.warning("upload rejected", key=event.key, etag=event.etag, reason=result.rejection.reason)
            else:
                logger.info("upload handled", key=event.key, etag=event.etag, outcome=result.outcome.value)
    except Exception:
        metrics.add_metric(name="FailedMessages", unit=MetricUnit.Count, value=1)
        logger.exception("message not processed; SQS will deliver it again or dead-letter it")
        raise
    finally:
        if retries := aws_bootstrap.retries.take():
            metrics.add_metric(name="Retries", unit=MetricUnit.Count, value=retries)
        logger.remove_keys(["message_id", "receive_count"])


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(event=event, record_handler=record_message, processor=processor, context=context)
    )
