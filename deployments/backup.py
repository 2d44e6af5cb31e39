"""Policies (and the maintenance flows of prefect.yaml) as Prefect deployments.

Two ways to run them, one set of plans (``vowvault.plan``):

- single machine: deployments without a work pool, served by ``vowvault serve`` (one
  process runs every deployment's scheduled runs);
- production: ``vowvault deploy --work-pool NAME`` creates a process work pool with one
  queue per priority and deploys into it from this project's directory; any number of
  ``prefect worker start --pool NAME`` processes run them, highest-priority queue first.

Either way, global concurrency limits (one per database server, one per storage target)
are created first, so that the flow's strict acquisition never meets an unknown name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vowvault.engine import queries
from vowvault.engine.context import Context
from vowvault.plan import QUEUE_PRIORITY, DeploymentPlan, Schedule, limit_slots

PROJECT_DIR = Path(__file__).resolve().parents[1]
BACKUP_ENTRYPOINT = "flows/backup.py:backup"
DEFAULT_POOL = "vowvault"


@dataclass
class MaintenancePlan:
    name: str
    entrypoint: str
    queue: str
    schedules: list[Schedule]
    description: str
    parameters: dict[str, Any]
    tags: list[str]


def maintenance_plans(path: Path = PROJECT_DIR / "prefect.yaml") -> list[MaintenancePlan]:
    """The maintenance deployments declared in prefect.yaml."""
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for d in doc.get("deployments") or []:
        schedules = [Schedule("cron", s["cron"], s.get("timezone", "UTC"))
                     for s in d.get("schedules") or [] if "cron" in s]
        pool = d.get("work_pool") or {}
        out.append(MaintenancePlan(d["name"], d["entrypoint"],
                                   pool.get("work_queue_name") or "low", schedules,
                                   d.get("description", ""), d.get("parameters") or {},
                                   list(d.get("tags") or [])))
    return out


def _schedules(plan: DeploymentPlan | MaintenancePlan) -> list[Any]:
    from prefect.schedules import Cron, RRule

    return [Cron(s.expression, timezone=s.timezone) if s.kind == "cron"
            else RRule(s.expression, timezone=s.timezone) for s in plan.schedules]


def _load_flow(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(PROJECT_DIR / entrypoint))


def runner_deployments(ctx: Context) -> list[Any]:
    """Deployments without a work pool, for ``serve``."""
    from flows.backup import backup

    deployments = [backup.to_deployment(
        name=p.name, schedules=_schedules(p), parameters=p.parameters, tags=p.tags,
        description=p.description, paused=p.paused) for p in queries.deployment_plans(ctx)]
    for m in maintenance_plans():
        flow = _load_flow(m.entrypoint)
        deployments.append(flow.to_deployment(
            name=m.name, schedules=_schedules(m), parameters=m.parameters, tags=m.tags,
            description=m.description))
    return deployments


async def _ensure_limits(names: set[str]) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for name in sorted(names):
            await client.upsert_global_concurrency_limit_by_name(name, limit_slots(name))


async def _ensure_pool(pool: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    made = []
    async with get_client() as client:
        try:
            await client.read_work_pool(pool)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            made.append(f"work pool {pool} (process)")
        for priority, rank in QUEUE_PRIORITY.items():
            name = priority.value.lower()
            try:
                queue = await client.read_work_queue_by_name(name, work_pool_name=pool)
                if queue.priority != rank:
                    await client.update_work_queue(queue.id, priority=rank)
            except ObjectNotFound:
                try:
                    await client.create_work_queue(name=name, work_pool_name=pool,
                                                   priority=rank,
                                                   description=f"{priority.value} backups")
                    made.append(f"queue {name} (priority {rank})")
                except ObjectAlreadyExists:
                    pass
    return made


@dataclass
class DeploySummary:
    deployments: list[str]
    paused: list[str]
    limits: list[str]
    created: list[str]


def deploy(ctx: Context, pool: str | None = None,
           env: dict[str, str] | None = None) -> DeploySummary:
    """Create or update every deployment (idempotent). With ``pool``, into that process work
    pool (created with its priority queues when missing); otherwise for ``serve``."""
    plans = queries.deployment_plans(ctx)
    limits = {name for p in plans for name in p.limits}
    asyncio.run(_ensure_limits(limits))
    created = asyncio.run(_ensure_pool(pool)) if pool else []
    names, paused = [], []
    if pool is None:
        for deployment in runner_deployments(ctx):
            deployment.apply()
            names.append(f"{deployment.flow_name}/{deployment.name}")
    else:
        job_variables = {"env": env or {}, "working_dir": str(PROJECT_DIR),
                         "command": launcher_command()}
        for p in plans:
            _from_source(BACKUP_ENTRYPOINT).deploy(
                name=p.name, work_pool_name=pool, work_queue_name=p.queue,
                schedules=_schedules(p), parameters=p.parameters, tags=p.tags,
                description=p.description, paused=p.paused, job_variables=job_variables,
                build=False, push=False, print_next_steps=False, ignore_warnings=True)
            names.append(f"backup/{p.name}")
        for m in maintenance_plans():
            flow = _from_source(m.entrypoint)
            flow.deploy(name=m.name, work_pool_name=pool, work_queue_name=m.queue,
                        schedules=_schedules(m), parameters=m.parameters, tags=m.tags,
                        description=m.description, job_variables=job_variables, build=False,
                        push=False, print_next_steps=False, ignore_warnings=True)
            names.append(f"{flow.name}/{m.name}")
    paused = [f"backup/{p.name}" for p in plans if p.paused]
    return DeploySummary(names, paused, sorted(limits), created)


def launcher_command() -> str:
    """The flow-run command of the work pool's runs: Prefect's engine, forked from a warm
    process when it can be (deployments/launcher.py), else started as Prefect would."""
    import shlex
    import sys

    return shlex.join([sys.executable, "-m", "deployments.launcher"])


def _from_source(entrypoint: str) -> Any:
    from prefect.flows import Flow

    return Flow.from_source(source=str(PROJECT_DIR), entrypoint=entrypoint)


def serve(ctx: Context) -> None:
    """Run every deployment's schedule in this process (single machine)."""
    from prefect import serve as prefect_serve

    plans = queries.deployment_plans(ctx)
    asyncio.run(_ensure_limits({name for p in plans for name in p.limits}))
    # Stopping serve must not pause the deployments: a restart would find them paused.
    prefect_serve(*runner_deployments(ctx), pause_on_shutdown=False)
