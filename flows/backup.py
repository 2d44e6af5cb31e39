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
    compress,
    encrypt,
    limits,
    prepare,
    record,
    snapshot,
    upload,
    verify,
)


@flow(name="backup", flow_run_name="{policy}",
      # The four streaming stages must run at once: fewer workers would deadlock them.
      task_runner=ThreadPoolTaskRunner(max_workers=6))
def backup(policy: str, scheduled_at: str | None = None) -> dict[str, Any]:
    names = limits(policy)
    with ExitStack() as held:
        # One limit at a time, each strict: Prefect's strict only fails when *every* name is
        # unknown, and an unknown limit must never silently limit nothing. Sorted names:
        # two runs never wait on each other's limits crosswise.
        for name in names:
            held.enter_context(concurrency(name, occupy=1, strict=True))
        job_id = prepare(policy, scheduled_at)
        wait([stage.submit(job_id) for stage in (snapshot, compress, encrypt, upload)])
        verify.submit(job_id).wait()
        return record(job_id)
