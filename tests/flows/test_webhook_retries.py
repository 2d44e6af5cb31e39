"""Webhook retries on a real Prefect API, without polling: a failed delivery leaves one
scheduled run of the webhook-delivery deployment at its retry time (however many times it
is asked for), nothing pending leaves none, and that run, executed when it comes due,
delivers and schedules the next attempt only if the endpoint still fails. The endpoint is a
real HTTP server on loopback (allowed by the operator's service file, as webhooks to
internal addresses are otherwise refused)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class Endpoint:
    """Answers every POST with ``status``; counts what it was sent."""

    def __init__(self) -> None:
        self.status = 500
        self.received: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                endpoint.received.append(self.headers["webhook-id"])
                self.send_response(endpoint.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.server.shutdown()
    e.server.server_close()


@pytest.fixture
def hooked(vv_home: Path, tmp_path: Path, endpoint: Endpoint,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    """Policy ``photos`` of organization ``lumiere``, whose webhook is ``endpoint``."""
    from vowvault.catalog.db import Catalog
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import parse_policy_text
    from vowvault.settings import load_settings

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    vv_home.mkdir(parents=True, exist_ok=True)
    (vv_home / "service.yaml").write_text("webhooks: {allow_hosts: [127.0.0.1]}\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Ada"}\n')
    catalog = Catalog.open(load_settings())
    apply_policy_file(catalog, parse_policy_text(f"""\
version: 1
organizations:
  - slug: lumiere
    name: Lumiere
    webhooks: [{{url: "{endpoint.url}", secret: "env:HOOK_SECRET"}}]
policies:
  - name: photos
    organization: lumiere
    source: {{kind: directory, path: {src}}}
    schedule: {{cron: "0 2 * * *"}}
    peak_season: {{multiplier: 1}}
    storage: [{{url: "file://{tmp_path / 'storage'}"}}]
""", "p.yaml", {}), actor="tester")
    catalog.dispose()
    return src


@pytest.fixture
def delivery_deployment(prefect_api: None) -> Iterator[Any]:
    """The webhook-delivery deployment as `vowvault serve` creates it (no schedule); no
    worker runs it, so what is scheduled stays scheduled. Removed afterwards, with its
    runs."""
    from flows.maintenance import webhook_delivery

    deployment_id = webhook_delivery.to_deployment(name="webhook-delivery").apply()
    yield deployment_id

    async def remove() -> None:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            for run in await runs_of(deployment_id):
                await client.delete_flow_run(run.id)
            await client.delete_deployment(deployment_id)

    asyncio.run(remove())


async def runs_of(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    async with get_client() as client:
        return await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC)


def deliveries() -> list[Any]:
    from tasks.common import context
    from vowvault.catalog.models import WebhookDelivery

    with context().catalog.read() as s:
        rows = s.execute(sa.select(WebhookDelivery)).scalars().all()
        for r in rows:
            s.expunge(r)
        return list(rows)


def scheduled_at(run: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(run.state.state_details.scheduled_time.isoformat())


def run_when_due(run: Any) -> Any:
    """Execute a scheduled run in this process, as a worker would: Prefect holds it until
    its scheduled time. (``run`` is updated in place, to its final state.)"""
    from prefect.flow_engine import run_flow

    from flows.maintenance import webhook_delivery

    return run_flow(webhook_delivery, flow_run=run, return_type="state")


def test_a_failed_delivery_leaves_one_run_scheduled_at_its_retry_time(
        hooked: Path, endpoint: Endpoint, delivery_deployment: Any) -> None:
    from flows.backup import backup
    from tasks.common import schedule_webhook_delivery
    from vowvault.domain import DeliveryStatus

    state = backup(policy="photos", return_state=True)
    assert state.is_completed()  # the endpoint's 500 does not fail the backup
    (d,) = deliveries()
    assert (d.event_type, d.status, d.attempts) == ("backup_completed",
                                                    DeliveryStatus.PENDING, 1)
    assert len(endpoint.received) == 1  # tried at once, by the backup's own run
    (run,) = asyncio.run(runs_of(delivery_deployment))
    assert run.state.is_scheduled() and scheduled_at(run) == d.next_attempt_at
    assert run.parent_task_run_id is None  # its own run, not a subflow of the backup

    again = [schedule_webhook_delivery() for _ in range(2)]
    assert again == [str(run.id)] * 2
    assert [r.id for r in asyncio.run(runs_of(delivery_deployment))] == [run.id]


def test_nothing_pending_schedules_nothing(hooked: Path, endpoint: Endpoint,
                                           delivery_deployment: Any) -> None:
    from flows.backup import backup
    from flows.dr_drill import dr_drill
    from flows.maintenance import webhook_delivery
    from tasks.common import schedule_webhook_delivery
    from vowvault.domain import DeliveryStatus

    endpoint.status = 204
    assert backup(policy="photos")["status"] == "COMPLETED"
    assert dr_drill(policy="photos")["passed"]
    assert webhook_delivery() == {}  # nothing due
    assert [(d.event_type, d.status) for d in deliveries()] == [
        ("backup_completed", DeliveryStatus.DELIVERED),
        ("drill_completed", DeliveryStatus.DELIVERED)]
    assert schedule_webhook_delivery() is None
    assert asyncio.run(runs_of(delivery_deployment)) == []


def test_the_retry_run_delivers_and_schedules_no_more(
        hooked: Path, endpoint: Endpoint, delivery_deployment: Any) -> None:
    from flows.backup import backup
    from vowvault.domain import DeliveryStatus

    backup(policy="photos")
    (run,) = asyncio.run(runs_of(delivery_deployment))
    due = scheduled_at(run)
    endpoint.status = 204  # the endpoint is back
    state = run_when_due(run)
    assert state.is_completed() and state.result() == {"DELIVERED": 1}
    (d,) = deliveries()
    assert d.status == DeliveryStatus.DELIVERED and d.attempts == 2
    # by the scheduled run (Prefect may start it up to half a second early)
    assert d.delivered_at >= due - dt.timedelta(seconds=1)
    (done,) = asyncio.run(runs_of(delivery_deployment))
    assert done.id == run.id and done.state.is_completed()


def test_a_delivery_still_failing_schedules_its_next_attempt(
        hooked: Path, endpoint: Endpoint, delivery_deployment: Any) -> None:
    from flows.backup import backup
    from vowvault.domain import DeliveryStatus

    backup(policy="photos")
    (first,) = asyncio.run(runs_of(delivery_deployment))
    due = scheduled_at(first)
    state = run_when_due(first)
    assert state.is_completed() and state.result() == {"PENDING": 1}
    (d,) = deliveries()
    assert d.status == DeliveryStatus.PENDING and d.attempts == 2
    assert [a["status"] for a in d.attempt_log] == [500, 500]
    assert d.next_attempt_at - due > dt.timedelta(seconds=59)  # the next backoff
    done, following = asyncio.run(runs_of(delivery_deployment))
    assert done.id == first.id and done.state.is_completed()
    assert following.state.is_scheduled() and scheduled_at(following) == d.next_attempt_at


def test_a_run_that_ended_without_delivering_gets_one_successor(
        hooked: Path, endpoint: Endpoint, delivery_deployment: Any) -> None:
    """The run for a retry's time crashed before delivering: asking again (the daily
    analytics run, the next flow that emits) schedules one more run for it, not one a
    call."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows.backup import backup
    from flows.maintenance import analytics
    from tasks.common import schedule_webhook_delivery

    backup(policy="photos")
    (crashed,) = asyncio.run(runs_of(delivery_deployment))

    async def crash() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(crashed.id, Crashed(), force=True)

    asyncio.run(crash())
    analytics()  # the safety net
    runs = asyncio.run(runs_of(delivery_deployment))
    assert len(runs) == 2
    successor = next(r for r in runs if r.id != crashed.id)
    assert successor.state.is_scheduled()
    (d,) = deliveries()
    assert scheduled_at(successor) == d.next_attempt_at  # overdue: runs when a worker can
    assert [schedule_webhook_delivery() for _ in range(2)] == [str(successor.id)] * 2
    assert len(asyncio.run(runs_of(delivery_deployment))) == 2


def test_without_the_deployment_the_emitting_flow_is_unaffected(
        prefect_api: None, hooked: Path, endpoint: Endpoint) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.backup import backup

    state = backup(policy="photos", return_state=True)
    assert state.is_completed()

    async def messages() -> list[str]:
        await APILogHandler.aflush()
        async with get_client() as client:
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
        return [log.message for log in logs]

    assert any("not scheduled: no webhook-delivery/webhook-delivery deployment" in m
               for m in asyncio.run(messages()))


def test_deploying_again_removes_the_old_every_minute_schedule(
        prefect_api: None, vv_home: Path) -> None:
    """A webhook-delivery deployment made before polled every minute; `vowvault deploy`
    (as `serve` does it) leaves it with no schedule."""
    from prefect.client.orchestration import get_client
    from prefect.schedules import Cron

    from deployments.backup import deploy
    from flows.maintenance import webhook_delivery
    from tasks.common import context

    deployment_id = webhook_delivery.to_deployment(
        name="webhook-delivery", schedules=[Cron("* * * * *", timezone="UTC")]).apply()

    async def schedules() -> list[Any]:
        async with get_client() as client:
            return (await client.read_deployment(deployment_id)).schedules

    async def remove(names: list[str]) -> None:
        async with get_client() as client:
            for name in names:
                await client.delete_deployment(
                    (await client.read_deployment_by_name(name)).id)

    assert len(asyncio.run(schedules())) == 1
    deployed = ["webhook-delivery/webhook-delivery"]
    try:
        deployed = deploy(context()).deployments
        assert "webhook-delivery/webhook-delivery" in deployed
        assert asyncio.run(schedules()) == []
    finally:
        asyncio.run(remove(deployed))
