"""The backup flow: prepare, then snapshot → compress → encrypt → upload running together
(a streaming pipeline), then verify and record. One flow run per backup."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from prefect import flow
from prefect.concurrency.sync import concurrency
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.backup import (
    abandon,
    compress,
    encrypt,
    limits,
    prepare,
    record,
    snapshot,
    upload,
    verify,
)
from tasks.common import schedule_webhook_delivery
from vowvault.errors import is_permanent


@flow(name="backup", flow_run_name="{policy}",
      # The four streaming stages must run at once: fewer workers would deadlock them.
      task_runner=ThreadPoolTaskRunner(max_workers=6))
def backup(policy: str, scheduled_at: str | None = None) -> dict[str, Any]:
    """A retry of this flow is a new attempt of the same job; an error no attempt can fix
    (``errors.is_permanent``) ends the retries at once, with its own message."""
    job_id = None
    try:
        names = limits(policy)
        with ExitStack() as held:
            # One limit at a time, each strict: Prefect's strict only fails when *every*
            # name is unknown, and an unknown limit must never silently limit nothing.
            # Sorted names: two runs never wait on each other's limits crosswise.
            for name in names:
                held.enter_context(concurrency(name, occupy=1, strict=True))
            job_id = prepare(policy, scheduled_at)
            wait([stage.submit(job_id) for stage in (snapshot, compress, encrypt, upload)])
            verify.submit(job_id).wait()
            return record(job_id)
    except BaseException as exc:
        if job_id is not None:  # stopped from outside (interrupted, terminated, crashed)
            abandon(job_id, exc)
        if is_permanent(exc):
            no_more_retries()
        raise
    finally:  # what it emitted (completed, failed, not restorable) may need a retry
        schedule_webhook_delivery()


def no_more_retries() -> None:
    """This flow run is not retried: its retry budget is set to what it has used."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    run = FlowRunContext.get()
    if run is None or run.flow_run is None:
        return
    policy = run.flow_run.empirical_policy.model_copy(update={"retries": 0})
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.flow_run.id, empirical_policy=policy)
