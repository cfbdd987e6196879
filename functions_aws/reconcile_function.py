"""The scheduled reconcile sweep: EventBridge invokes it (template.yaml, `ReconcileSchedule`).

It records uploads whose notification was never handled (a crash between the object write and the
table write) and flags records whose object vanished, through the core's `Reconciler`. The sweep
keeps its position in the table, so a run that reaches its time budget stops between pages and the
next scheduled run resumes there.
"""

from __future__ import annotations

from typing import Any

import aws_bootstrap
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelrepo.recovery import Reconciler

logger = Logger()
metrics = Metrics()

# Time kept back from the invocation's remaining time: the sweep checks its budget between pages,
# and one page may still have unrecorded objects to stream and hash after the budget ran out.
MAX_MARGIN_SECONDS = 120.0
MARGIN_SHARE = 0.2


def budget_seconds(context: LambdaContext) -> float:
    remaining = context.get_remaining_time_in_millis() / 1000
    return max(0.0, remaining - min(MAX_MARGIN_SECONDS, remaining * MARGIN_SHARE))


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = Reconciler(aws_bootstrap.repository()).run(budget_seconds=budget_seconds(context))
    metrics.add_metric(name="ReconciledUploads", unit=MetricUnit.Count, value=report.recorded)
    metrics.add_metric(name="VanishedObjects", unit=MetricUnit.Count, value=report.vanished)
    if retries := aws_bootstrap.retries.take():
        metrics.add_metric(name="Retries", unit=MetricUnit.Count, value=retries)
    logger.info("reconcile sweep", **report.to_json())
    return report.to_json()
