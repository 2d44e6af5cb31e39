"""When the next webhook retry is due (what a scheduler needs instead of polling), on the
embedded and the production catalog: the endpoint is a closed port on loopback, so every
attempt really fails (connection refused) and is rescheduled by the backoff."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from vowvault.catalog.models import Organization, WebhookDelivery
from vowvault.domain import DeliveryStatus
from vowvault.engine import webhooks
from vowvault.engine.context import Context
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import parse_policy_text
from vowvault.service import load_service_config
from vowvault.settings import Settings

START = dt.datetime(2026, 6, 10, 9, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def hooked(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """A context whose organization ``lumiere`` has one webhook, to a port nobody listens
    on (allowed by the operator's service file: loopback is refused otherwise)."""
    home = tmp_path / "home"
    home.mkdir()
    url = (f"sqlite:///{home / 'catalog.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    ctx = Context.from_settings(Settings(home=home, database_url=url, actor="tester"))
    (home / "service.yaml").write_text("webhooks: {allow_hosts: [127.0.0.1]}\n")
    ctx.service = load_service_config(home)
    monkeypatch.setenv("HOOK_SECRET", "whsec_" + base64.b64encode(secrets.token_bytes(24))
                       .decode())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connecting is refused
    apply_policy_file(ctx.catalog, parse_policy_text(f"""\
version: 1
organizations:
  - slug: lumiere
    name: Lumiere
    webhooks: [{{url: "http://127.0.0.1:{port}/hooks", secret: "env:HOOK_SECRET"}}]
""", "p.yaml", {}), actor="tester")
    yield ctx
    ctx.close()


def org_id(ctx: Context) -> uuid.UUID:
    with ctx.catalog.read() as s:
        return s.execute(sa.select(Organization.id)).scalar_one()


def pending(ctx: Context) -> WebhookDelivery:
    with ctx.catalog.read() as s:
        d = s.execute(sa.select(WebhookDelivery)).scalar_one()
        s.expunge(d)
        return d


def test_next_due_follows_the_backoff_until_nothing_is_pending(hooked: Context) -> None:
    ctx = hooked
    now = {"t": START}
    ctx.clock = lambda: now["t"]
    assert webhooks.next_due(ctx) is None  # nothing ever emitted
    webhooks.emit(ctx, org_id(ctx), "backup_completed", {"x": 1})
    d = pending(ctx)
    assert d.status == DeliveryStatus.PENDING and "ConnectionRefusedError" in d.error_message
    assert webhooks.next_due(ctx) == d.next_attempt_at == START + dt.timedelta(seconds=5)
    assert webhooks.deliver_pending(ctx) == {}  # not due yet
    for attempt in range(2, len(webhooks.BACKOFF) + 1):  # each at the time next_due said
        now["t"] = webhooks.next_due(ctx)
        assert webhooks.deliver_pending(ctx) == {"PENDING": 1}
        assert webhooks.next_due(ctx) == now["t"] + dt.timedelta(
            seconds=webhooks.BACKOFF[attempt - 1])
    now["t"] = webhooks.next_due(ctx)
    assert webhooks.deliver_pending(ctx) == {"GAVE_UP": 1}
    assert pending(ctx).attempts == len(webhooks.BACKOFF) + 1
    assert webhooks.next_due(ctx) is None  # given up: no run needed


def test_a_run_scheduled_for_the_retry_makes_it_even_if_it_starts_early(
        hooked: Context) -> None:
    """Prefect may start a run scheduled for T half a second before T: ``due_by=T``."""
    ctx = hooked
    now = {"t": START}
    ctx.clock = lambda: now["t"]
    webhooks.emit(ctx, org_id(ctx), "backup_completed", {"x": 1})
    due = webhooks.next_due(ctx)
    assert due is not None
    now["t"] = due - dt.timedelta(milliseconds=400)
    assert webhooks.deliver_pending(ctx) == {}
    assert webhooks.deliver_pending(ctx, due_by=due) == {"PENDING": 1}
    assert pending(ctx).attempts == 2
    assert webhooks.next_due(ctx) == now["t"] + dt.timedelta(seconds=60)
