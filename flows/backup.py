"""The backup flow: prepare, then snapshot → compress → encrypt → upload running together
(a streaming pipeline), then verify and record. One flow run per backup."""

from __future__ import annotations

from contextlib import nullcontext
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
    # strict: a limit that does not exist is an error, never a silent "no limit".
    with concurrency(names, occupy=1, strict=True) if names else nullcontext():
        job_id = prepare(policy, scheduled_at)
        wait([stage.submit(job_id) for stage in (snapshot, compress, encrypt, upload)])
        verify.submit(job_id).wait()
        return record(job_id)
