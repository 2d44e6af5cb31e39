"""The backup flow's tasks: each calls ONE function of ``vowvault.engine.backup``.

The four streaming stages run at the same time (they exchange frames through bounded
channels held by the engine, keyed by the job id), so they cannot be retried one by one:
the flow's retries re-run the whole backup, as ``backup_jobs.retry_count`` records.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from tasks.common import context, progress_reporter
from vowvault.engine import backup as engine

_opts: dict[str, Any] = {"cache_policy": NONE, "retries": 0}


@task(name="limits", **_opts)
def limits(policy: str) -> list[str]:
    """The concurrency limits to hold: only in deployments, where `vowvault deploy` made
    them (an ad-hoc local run has no limits to respect)."""
    from prefect.runtime import deployment

    if not deployment.get_id():
        return []
    return engine.concurrency_limits(context(), policy)


@task(name="prepare", **_opts)
def prepare(policy: str, scheduled_at: str | None = None) -> str:
    """Create the job, take its data key, check the source; returns the job id."""
    when = dt.datetime.fromisoformat(scheduled_at) if scheduled_at else None
    run_id = flow_run.get_id()
    return engine.start(context(), policy, flow_run_id=str(run_id) if run_id else None,
                        attempt=flow_run.get_run_count() or 1, scheduled_at=when)


@task(name="snapshot", **_opts)
def snapshot(job_id: str) -> dict[str, Any]:
    """Read the source (pg_dump, or the file tree) into frames."""
    reporter = progress_reporter("read")
    result = engine.run_stage(job_id, "snapshot", progress=reporter)
    if not result["aborted"]:
        reporter.finish()
    return result


@task(name="compress", **_opts)
def compress(job_id: str) -> dict[str, Any]:
    return engine.run_stage(job_id, "compress")


@task(name="encrypt", **_opts)
def encrypt(job_id: str) -> dict[str, Any]:
    return engine.run_stage(job_id, "encrypt")


@task(name="upload", **_opts)
def upload(job_id: str) -> dict[str, Any]:
    return engine.run_stage(job_id, "upload")


@task(name="verify", **_opts)
def verify(job_id: str) -> dict[str, Any]:
    """Read every object of every copy back and prove it."""
    return engine.verify_stage(job_id)


@task(name="record", **_opts)
def record(job_id: str) -> dict[str, Any]:
    """Record the outcome in the catalog; leave a summary artifact."""
    from prefect.artifacts import create_markdown_artifact

    try:
        result = engine.finish(job_id)
    except Exception as exc:
        create_markdown_artifact(markdown=f"# Backup failed\n\n`{job_id}`: {exc}\n",
                                 key="backup-result", description="backup failed")
        raise
    create_markdown_artifact(markdown=summary_markdown(result.as_dict()), key="backup-result",
                             description=f"backup of {result.policy}")
    return result.as_dict()


def summary_markdown(r: dict[str, Any]) -> str:
    mib = 1024 * 1024
    ratio = r["stored_bytes"] / r["source_bytes"] if r["source_bytes"] else 0
    lines = [
        f"# Backup of `{r['policy']}`: {r['status']}",
        "",
        "| | |", "|---|---|",
        f"| backup id | `{r['job_id']}` |",
        f"| type | {r['backup_type']} |",
        f"| read | {r['source_bytes'] / mib:.1f} MiB |",
        f"| stored | {r['stored_bytes'] / mib:.1f} MiB (ratio {ratio:.3f}) |",
        f"| duration | {r['duration_seconds']:.1f} s |",
        f"| copies (verified) | {', '.join(r['targets'])} |",
    ]
    if r.get("files") is not None:
        lines.append(f"| files | {r['files']} |")
    if r.get("tables") is not None:
        lines.append(f"| tables | {r['tables']} |")
    lines += ["", "Stage busy time (s): " + ", ".join(f"{k} {v}" for k, v in
                                                     r["stage_seconds"].items())]
    if r.get("warnings"):
        lines += ["", "**Warnings**", *[f"- {w}" for w in r["warnings"]]]
    lines += ["", f"Restore with `vowvault backup restore {r['job_id']} --to-dir PATH` or "
                  f"`--to-database DSN`."]
    return "\n".join(lines)


def abandon(job_id: str, error: BaseException) -> None:
    """Not a task: the flow's way to stop and record a run it can no longer finish
    (Prefect's own termination signal is SIGTERM, recorded as such)."""
    from prefect.exceptions import TerminationSignal

    from vowvault.errors import Terminated

    if isinstance(error, TerminationSignal):
        error = Terminated("terminated (SIGTERM)")
    engine.abandon(job_id, error)
