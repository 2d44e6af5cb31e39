"""Webhooks to a real HTTP receiver on loopback that checks Standard Webhooks signatures:
events with the report's payload, retries with every attempt logged, wedding-day
escalation within two minutes."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from vowvault.catalog.models import WebhookDelivery
from vowvault.domain import DeliveryStatus
from vowvault.engine import webhooks
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.drill import run_drill
from vowvault.engine.restore import restore_backup
from vowvault.errors import SourceError

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def verify(headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    """The receiver's side of Standard Webhooks, written from the spec."""
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(ts)) > 300:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(sig.removeprefix("v1,"), expected)
               for sig in headers["webhook-signature"].split())


class Receiver:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.fail_next = 0
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not verify(headers, body):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(503)
                else:
                    receiver.events.append({**json.loads(body), "_id": headers["webhook-id"]})
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def hooked(ctx: Context, tmp_path: Path, receiver: Receiver,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    from vowvault.policies.apply import apply_policy_file
    from vowvault.service import load_service_config

    # The receiver is on 127.0.0.1, which webhooks never reach unless the operator says so.
    (ctx.settings.home / "service.yaml").write_text("webhooks: {allow_hosts: [127.0.0.1]}\n")
    ctx.service = load_service_config(ctx.settings.home)
    from vowvault.policies.loader import parse_policy_text

    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Ada"}')
    apply_policy_file(ctx.catalog, parse_policy_text(f"""\
version: 1
organizations:
  - slug: grand-hall
    name: The Grand Hall
    vendor_type: venue
    webhooks: [{{url: "{receiver.url}", secret: "env:HOOK_SECRET"}}]
weddings: [{{organization: grand-hall, wedding_id: 5b0f2a4e-8c1d-4f4e-9a55-3f1c2d7e9a01,
             date: 2026-06-13}}]
policies:
  - name: hall
    organization: grand-hall
    vendor_type: venue
    wedding_day_priority: true
    source: {{kind: directory, path: {src}}}
    schedule: {{cron: "0 2 * * *"}}
    peak_season: {{multiplier: 1}}
    storage: [{{url: "file://{tmp_path}/storage"}}]
""", "p.yaml", {}), actor="t")
    return src


def test_events_are_signed_and_carry_the_reports_fields(ctx: Context, hooked: Path,
                                                        receiver: Receiver,
                                                        tmp_path: Path) -> None:
    ctx.clock = lambda: dt.datetime(2026, 6, 10, 9, tzinfo=dt.UTC)  # the wedding is ahead
    ok = run_backup(ctx, "hall")
    restore_backup(ctx, ok.job_id, to_dir=tmp_path / "out")
    run_drill(ctx, "hall")
    events = [e["event"] for e in receiver.events]
    assert events == ["backup_completed", "restore_completed", "drill_completed"]
    first = receiver.events[0]
    assert {k: first[k] for k in ("backup_job_id", "wedding_date", "vendor_type", "status",
                                  "verification_status")} == {
        "backup_job_id": ok.job_id, "wedding_date": "2026-06-13", "vendor_type": "venue",
        "status": "completed", "verification_status": "verified"}
    assert isinstance(first["data_size_gb"], float)
    assert receiver.bad_signatures == 0
    assert not verify({"webhook-id": first["_id"], "webhook-timestamp": str(int(time.time())),
                       "webhook-signature": "v1,AAAA"}, b"{}")  # the check has teeth


def test_failures_are_retried_and_every_attempt_logged(ctx: Context, hooked: Path,
                                                       receiver: Receiver) -> None:
    receiver.fail_next = 2
    now = {"t": dt.datetime(2026, 6, 10, 9, tzinfo=dt.UTC)}  # a Wednesday
    ctx.clock = lambda: now["t"]
    run_backup(ctx, "hall")
    assert receiver.events == []
    for seconds in (5, 60):
        now["t"] += dt.timedelta(seconds=seconds)
        webhooks.deliver_pending(ctx)
    assert [e["event"] for e in receiver.events] == ["backup_completed"]
    with ctx.catalog.session() as s:
        d = s.execute(sa.select(WebhookDelivery)).scalar_one()
        assert d.status == DeliveryStatus.DELIVERED and d.attempts == 3
        assert [a["status"] for a in d.attempt_log] == [503, 503, 204]


def test_a_failed_wedding_day_backup_escalates_within_two_minutes(
        ctx: Context, hooked: Path, receiver: Receiver) -> None:
    now = {"t": dt.datetime(2026, 6, 13, 9, tzinfo=dt.UTC)}  # Saturday, and a wedding date
    ctx.clock = lambda: now["t"]
    failed_at = now["t"]
    for p in hooked.iterdir():
        p.unlink()
    hooked.rmdir()  # the source is gone: the backup fails
    receiver.fail_next = 4  # and the receiver is struggling
    with pytest.raises(SourceError):
        run_backup(ctx, "hall")
    while not receiver.events:
        now["t"] += dt.timedelta(seconds=15)
        webhooks.deliver_pending(ctx)  # what the webhook-delivery flow does every minute
        assert now["t"] - failed_at <= dt.timedelta(minutes=2)
    (event,) = receiver.events
    assert event["event"] == "backup_failed" and event["escalation"] is True
    assert event["is_wedding_day_backup"] is True and "does not exist" in str(event["error"])


def test_a_key_past_its_rotation_date_is_announced_once(ctx: Context, hooked: Path,
                                                        receiver: Receiver) -> None:
    from vowvault.engine.keyring import notify_rotation_due, rotate

    now = {"t": dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)}
    ctx.clock = lambda: now["t"]
    run_backup(ctx, "hall")  # creates key version 1, due for rotation after 90 days
    receiver.events.clear()
    now["t"] += dt.timedelta(days=89)
    assert notify_rotation_due(ctx) == [] and receiver.events == []
    now["t"] += dt.timedelta(days=2)
    assert [k["version"] for k in notify_rotation_due(ctx)] == [1]
    notify_rotation_due(ctx)  # the next day's analytics run: no second message
    assert [(e["event"], e["key_version"], e["age_days"]) for e in receiver.events] == [
        ("key_rotation_due", 1, 91)]
    rotate(ctx, "grand-hall")
    assert notify_rotation_due(ctx) == []
