"""Webhooks: tell other systems what happened, signed so they can trust it.

Per organization, endpoints subscribe to events. Every event becomes one delivery per
endpoint (``webhook_deliveries``), signed per the Standard Webhooks scheme::

    webhook-id: msg_<uuid>          webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

where the key is the endpoint's secret (``whsec_<base64>``, named by ``secret_ref`` and
resolved through ``vowvault.secrets``: it is never stored). A delivery is tried at once,
by the work that emitted the event; a failure is tried again at its ``next_attempt_at``,
with backoff (5 s, 1 min, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), by ``deliver_pending``.
Nothing here polls: ``next_due`` tells a scheduler when the earliest retry is due, and the
Prefect face (``tasks.common.schedule_webhook_delivery``) starts one webhook-delivery run
at that time after every flow that may emit and after each delivery run (``vowvault
webhooks deliver`` retries what is due by hand). Every attempt is kept in the delivery's
``attempt_log``. A failed wedding-day backup is an *escalation*: it is retried every 15
seconds, so it reaches its endpoints within two minutes of the failure unless they are down
throughout. Sending never fails the work that emitted the event.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.models import (
    BackupJob,
    Organization,
    WebhookDelivery,
    WebhookEndpoint,
    WeddingDate,
)
from vowvault.domain import DeliveryStatus
from vowvault.engine.context import Context, log
from vowvault.errors import BoundaryError

EVENTS = ("backup_completed", "backup_failed", "verification_failed", "drill_completed",
          "drill_failed", "restore_completed", "key_rotation_due", "emergency_recovery",
          "wal_gap", "wal_backlog")
BACKOFF = (5, 60, 300, 1800, 7200, 18000, 36000, 36000)
ESCALATION_BACKOFF = (15,) * 8
TIMEOUT = 10.0


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks v1 signature of a message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def backup_payload(session: Session, job: BackupJob, event: str) -> dict[str, Any]:
    """The report's payload fields for an event about a backup (read in the caller's
    session: SQLite allows one writer, so no second session may open meanwhile)."""
    s = session
    org = s.get(Organization, job.organization_id)
    day = job.created_at.date() if job.created_at else None
    wedding = s.execute(sa.select(WeddingDate.wedding_date).where(
        WeddingDate.organization_id == job.organization_id,
        WeddingDate.wedding_date >= (day or dt.date.min))
        .order_by(WeddingDate.wedding_date).limit(1)).scalar_one_or_none()
    policy = job.policy
    vendor = (policy.vendor_type or (org.vendor_type if org else None)) if policy else None
    return {
        "event": event, "backup_job_id": str(job.id),
        "wedding_date": wedding.isoformat() if wedding else None,
        "vendor_type": vendor.value.lower() if vendor else None,
        "status": job.status.value.lower(),
        "data_size_gb": float(job.actual_size_gb or Decimal(0)),
        "verification_status": (job.verification_status.value.lower()
                                if job.verification_status else "unverified"),
        "policy": policy.name if policy else None,
        "is_wedding_day_backup": job.is_wedding_day_backup,
        "error": job.error_message,
    }


def emit(ctx: Context, org_id: uuid.UUID, event: str, payload: dict[str, Any], *,
         escalation: bool = False) -> list[str]:
    """Queue the event for every endpoint of the organization that wants it, and try each
    once now. Never raises: a webhook must not fail the work that emitted it."""
    try:
        with ctx.catalog.session() as s:
            endpoints = list(s.execute(sa.select(WebhookEndpoint).where(
                WebhookEndpoint.organization_id == org_id,
                WebhookEndpoint.is_active.is_(True))).scalars())
            ids = []
            now = ctx.clock()
            for ep in endpoints:
                if ep.events and event not in ep.events:
                    continue
                delivery = WebhookDelivery(
                    id=uuid.uuid4(), organization_id=org_id, endpoint_id=ep.id,
                    event_type=event, message_id=f"msg_{uuid.uuid4().hex}",
                    payload={**payload, "event": event,
                             "timestamp": now.isoformat(timespec="seconds"),
                             **({"escalation": True} if escalation else {})},
                    status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now,
                    escalation=escalation, attempt_log=[])
                s.add(delivery)
                ids.append(delivery.id)
        for delivery_id in ids:
            attempt(ctx, delivery_id)
        if escalation:
            log.critical("ESCALATION %s: %s", event, json.dumps(payload, default=str))
        return [str(i) for i in ids]
    except Exception as exc:  # reported, never raised
        log.error("webhook event %s not queued: %s", event, exc)
        return []


def attempt(ctx: Context, delivery_id: uuid.UUID) -> DeliveryStatus:
    """One try of one delivery; the outcome is recorded, the next try scheduled. The
    request is sent between two short transactions, never inside one."""
    from vowvault.secrets import resolve

    with ctx.catalog.read() as s:
        d = s.get(WebhookDelivery, delivery_id)
        assert d is not None
        if d.status != DeliveryStatus.PENDING:
            return d.status
        ep = s.get(WebhookEndpoint, d.endpoint_id)
        assert ep is not None
        org = s.get(Organization, d.organization_id)
        assert org is not None
        url, secret_ref, message_id = ep.url, ep.secret_ref, d.message_id
        slug, org_id = org.slug, org.id
        body = json.dumps(d.payload, sort_keys=True, separators=(",", ":"), default=str
                          ).encode()
    timestamp = int(time.time())
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    refused: BoundaryError | None = None
    try:
        ctx.rules.check_secret(slug, secret_ref)
        address = ctx.rules.webhook_address(url)
        signature = sign(resolve(secret_ref), message_id, timestamp, body)
        status_code = _post(url, address, body, {
            "content-type": "application/json", "user-agent": "vowvault-webhooks/1",
            "webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature})
    except BoundaryError as exc:
        refused, error = exc, str(exc)[:300]
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    elapsed = round((time.perf_counter() - started) * 1000)
    with ctx.catalog.session() as s:
        d = s.get(WebhookDelivery, delivery_id)
        assert d is not None
        now = ctx.clock()
        d.attempts += 1
        d.response_status = status_code
        d.attempt_log = [*(d.attempt_log or []), {
            "at": now.isoformat(timespec="seconds"), "status": status_code, "error": error,
            "ms": elapsed}]
        if refused is not None:  # where it points is not allowed: never tried again
            d.status, d.error_message, d.next_attempt_at = (DeliveryStatus.GAVE_UP, error,
                                                            None)
            audit.record(s, actor=ctx.settings.actor, action="webhook.refused",
                         target_type="webhook_endpoint", target_id=d.endpoint_id,
                         organization_id=org_id, summary=error)
            log.error("webhook %s refused: %s", d.event_type, error)
        elif status_code is not None and 200 <= status_code < 300:
            d.status, d.delivered_at, d.error_message, d.next_attempt_at = (
                DeliveryStatus.DELIVERED, now, None, None)
        else:
            d.error_message = error
            schedule = ESCALATION_BACKOFF if d.escalation else BACKOFF
            if d.attempts > len(schedule):
                d.status, d.next_attempt_at = DeliveryStatus.GAVE_UP, None
                log.error("webhook %s to %s given up after %d attempts", d.event_type,
                          url, d.attempts)
            else:
                d.next_attempt_at = now + dt.timedelta(seconds=schedule[d.attempts - 1])
        return d.status


def _post(url: str, address: tuple[str, int], body: bytes, headers: dict[str, str]) -> int:
    """POST to ``url`` over a connection made to ``address`` (the one the service's rules
    checked: a DNS answer that changes meanwhile cannot send it elsewhere); redirects are
    not followed (they could point anywhere). Returns the status code."""
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", address[1], timeout=TIMEOUT,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", address[1], timeout=TIMEOUT)
    conn._create_connection = lambda _addr, timeout, source: (  # type: ignore[attr-defined]
        socket.create_connection(address, timeout, source))
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def next_due(ctx: Context) -> dt.datetime | None:
    """When the earliest pending delivery is to be tried next (None: nothing pending, so
    no delivery run is needed). It may lie in the past: that retry is overdue."""
    with ctx.catalog.read() as s:
        return s.execute(sa.select(sa.func.min(WebhookDelivery.next_attempt_at)).where(
            WebhookDelivery.status == DeliveryStatus.PENDING)).scalar_one()


def deliver_pending(ctx: Context, *, due_by: dt.datetime | None = None) -> dict[str, int]:
    """Retry every delivery whose next attempt is due: by now, or by ``due_by`` when that
    is later. A run scheduled for a delivery's time passes that time, so it tries the
    delivery even if it starts a moment early by this machine's clock (Prefect starts a
    scheduled run up to half a second early, by the API server's clock)."""
    now = ctx.clock() if due_by is None else max(ctx.clock(), due_by)
    with ctx.catalog.read() as s:
        due = list(s.execute(sa.select(WebhookDelivery.id).where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now).order_by(
            WebhookDelivery.escalation.desc(), WebhookDelivery.next_attempt_at)).scalars())
    counts: dict[str, int] = {}
    for delivery_id in due:
        outcome = attempt(ctx, delivery_id).value
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
