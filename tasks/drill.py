"""The DR drill flow's task: one core call, and its verdict as an artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from tasks.common import context
from vowvault.engine.drill import run_drill


@task(name="restore and validate", cache_policy=NONE)
def drill(policy: str, backup: str, drill_server: str | None,
          archive_wait: float) -> dict[str, Any]:
    try:
        result = run_drill(context(), policy, backup, drill_server, archive_wait).as_dict()
    except Exception as exc:
        create_markdown_artifact(key="dr-drill", description=f"drill of {policy}: FAILED",
                                 markdown=f"# DR drill of `{policy}`: FAILED\n\n"
                                          f"Backup `{backup}` could not be restored and "
                                          f"validated:\n\n> {exc}\n")
        raise
    verdict = "PASSED" if result["passed"] else "MISSED THE RTO TARGET"
    create_markdown_artifact(key="dr-drill", description=f"drill of {policy}", markdown=(
        f"# DR drill of `{policy}`: {verdict}\n\n| | |\n|---|---|\n"
        f"| backup | `{result['backup_id']}` |\n"
        f"| recovery time (RTO) | {result['rto_seconds']:.1f} s (target "
        f"{result['rto_target_seconds']} s) |\n"
        f"| backup age (RPO) | {result['rpo_seconds'] / 3600:.1f} h |\n"
        f"| validation | {result['validation']} |\n"))
    return result
