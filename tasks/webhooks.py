"""Webhook retries without polling: after a flow that may have queued deliveries, ONE run of
the webhook-delivery deployment is scheduled for the earliest retry the catalog holds
(``webhooks.next_due``). That run delivers, then schedules the next one the same way, so a
delivery that keeps failing is tried at each of its backoff times and nothing runs while
nothing is due. The daily analytics flow schedules too: a process that died after emitting,
before scheduling, still has its retry run within a day.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from tasks.common import context

DEPLOYMENT = "webhook-delivery/webhook-delivery"


def schedule_webhook_delivery() -> str | None:
    """The id of the webhook-delivery run that will make the next attempt (None: nothing
    pending, or no such deployment). Never raises: the flow that emitted the event must not
    fail over its webhooks. A plain call, not a task: it adds no step to the flows' graphs
    (its lines are in the calling run's logs)."""
    from prefect.exceptions import MissingContextError, ObjectNotFound
    from prefect.logging import get_run_logger

    from vowvault.engine.webhooks import next_due

    logger: Any
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)
    due: dt.datetime | None = None
    try:
        due = next_due(context())
        if due is None:
            return None
        return _schedule(due)
    except ObjectNotFound:
        # Flows called without deployments (a temporary server): only `vowvault webhooks
        # deliver` makes retries there.
        logger.info("webhook retry due at %s not scheduled: no %s deployment",
                    due.isoformat() if due else "?", DEPLOYMENT)
    except Exception as exc:
        logger.warning("webhook retry due at %s not scheduled: %s",
                       due.isoformat() if due else "?", exc)
    return None


def _schedule(due: dt.datetime) -> str:
    """One run per due time, however many flows ask: the idempotency key is the time. A
    run for that time that has already finished (it crashed, or failed, before delivering)
    gets a successor, keyed by its id: asking again never makes a third."""
    from prefect.deployments import run_deployment

    def run(key: str) -> Any:
        # Not as a subflow: the run belongs to no emitting flow, and outlives it.
        return run_deployment(DEPLOYMENT, scheduled_time=due, timeout=0, as_subflow=False,
                              idempotency_key=key)

    flow_run = run(f"webhook-delivery-{due.isoformat()}")
    if flow_run.state is not None and flow_run.state.is_final():
        flow_run = run(f"webhook-delivery-{due.isoformat()}-after-{flow_run.id}")
    return str(flow_run.id)
