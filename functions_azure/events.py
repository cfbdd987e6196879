"""Events out: the dispatcher functions that publish the outbox to the Event Grid topic.

The event rows in the table are the outbox; the core's `Dispatcher` delivers a partition's events
to each subscriber: the index (the experiments listing and search, always) and the Event Grid
topic (when one is configured). It delivers a partition's events
after its cursor, in order, moving the cursor only after the topic accepted a batch. Two triggers
drive it, so that delivery is prompt and nothing depends on a message that can be lost:

- `deliver_events`, a queue trigger on the hint queue (`%MODELREPO_EVENTS_QUEUE%`): every function
  that commits a change has the partition's name put on it after the commit (`EventHints`, off the
  request's path), and this drains that partition at once. A storage failure raises, so the host retries the message
  (`extensions.queues.maxDequeueCount` in host.json) and then parks it in `<queue>-poison`; a hint
  is only a trigger, so a parked one loses nothing.
- `sweep_events`, a timer trigger (`%MODELREPO_EVENTS_SWEEP_SCHEDULE%`): drains every partition,
  which delivers what a crash between a commit and its hint, a lost hint, or a crash of the
  dispatcher mid-batch left behind, and retries partitions parked after a failed delivery once
  their pause is over.

Both are at least once: a dispatcher killed after the topic accepted a batch but before the cursor
moved delivers that batch again, and hints processed side by side may publish the same events
twice; never a later event of a partition before an earlier one was accepted. Consumers dedupe by
the CloudEvent `id` and order by `sequence`.
"""

from __future__ import annotations

import logging

import azure.functions as func

from functions_azure.bootstrap import runtime
from modelrepo.adapters.azure import CONNECTION, EVENTS_QUEUE_SETTING, EVENTS_SWEEP_SCHEDULE_SETTING, partition_of_hint

log = logging.getLogger(__name__)
blueprint = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped


@blueprint.function_name("deliver_events")
@blueprint.queue_trigger(arg_name="hint", queue_name=f"%{EVENTS_QUEUE_SETTING}%", connection=CONNECTION)
def deliver_events(hint: func.QueueMessage) -> None:
    app = runtime()
    try:
        partition = partition_of_hint(hint.get_body())
    except ValueError as error:  # not ours: retrying cannot help, and the sweep covers every partition
        log.warning("hint %s dropped: %s", hint.id, error)
        return
    for dispatcher in app.events.subscribers:
        delivered = dispatcher.drain(partition)
        log.info("%s: %d events delivered to %s", partition, delivered, dispatcher.subscriber)


@blueprint.function_name("sweep_events")
@blueprint.timer_trigger(arg_name="timer", schedule=f"%{EVENTS_SWEEP_SCHEDULE_SETTING}%", run_on_startup=False)
def sweep_events(timer: func.TimerRequest) -> None:
    app = runtime()
    for dispatcher in app.events.subscribers:
        delivered = dispatcher.sweep()
        log.info(
            "event sweep%s: %d events to %s", " (past due)" if timer.past_due else "", delivered, dispatcher.subscriber
        )
