"""The scheduled reconcile: a timer trigger that heals what the event path missed.

Every `MODELREPO_RECONCILE_SCHEDULE` (NCRONTAB, an app setting the host reads) it runs the core's
resumable sweep for at most `MODELREPO_RECONCILE_BUDGET_SECONDS`, well inside host.json's
`functionTimeout`: objects without records are recorded, records whose object vanished are
flagged, and where the sweep stopped is kept in the table, so the next run goes on from there.
Timer functions run on one instance at a time; the sweep is idempotent anyway, so it is safe next
to live uploads and next to `modelrepo reconcile --backend azure`.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions_azure.bootstrap import runtime
from modelrepo.adapters.azure import RECONCILE_SCHEDULE_SETTING
from modelrepo.recovery import Reconciler

log = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped


@blueprint.function_name("reconcile")
@blueprint.timer_trigger(arg_name="timer", schedule=f"%{RECONCILE_SCHEDULE_SETTING}%", run_on_startup=False)
def reconcile(timer: func.TimerRequest) -> None:
    app = runtime()
    report = Reconciler(app.repository).run(budget_seconds=app.settings.reconcile_budget_seconds)
    log.info("reconcile%s: %s", " (past due)" if timer.past_due else "", report.to_json())
