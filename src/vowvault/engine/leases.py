"""Leases: who runs a backup or a restore, and until when.

A job (a ``backup_jobs`` or ``recovery_jobs`` row) carries its owner (host, pid and a random
token) and a lease that a heartbeat renews. Lease times come from the catalog server's
clock on PostgreSQL (``now()`` in SQL: workers on several machines need not agree on the
time) and from this machine's clock on the embedded SQLite catalog (one host). The reaper
(``reaper``) takes a job for dead at once when its owner is on this host and its pid is
gone, otherwise only when its lease has run out, and never while its pid lives on this
host. Recording a result checks the token, so a job the reaper took can never be
recorded as done by the process it took it from.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import threading
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.engine.context import Context, log


def new_token() -> str:
    return secrets.token_hex(16)


def now_sql(session: Session, ctx: Context) -> Any:
    """The catalog's notion of now: the server's clock on PostgreSQL, ours on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.now()
    return ctx.clock()


def until_sql(session: Session, ctx: Context, seconds: float) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.now() + sa.literal(dt.timedelta(seconds=seconds))
    return ctx.clock() + dt.timedelta(seconds=seconds)


def owner_fields(session: Session, ctx: Context, token: str) -> dict[str, Any]:
    """The columns that make this process the owner of a job, with a fresh lease."""
    return {"worker_host": socket.gethostname(), "worker_pid": os.getpid(),
            "owner_token": token, "heartbeat_at": now_sql(session, ctx),
            "lease_expires_at": until_sql(session, ctx, ctx.lease_seconds)}


class Lease:
    """Renews the lease of one job every ``ctx.heartbeat_seconds`` until stopped. If the
    job is no longer this owner's (it was reaped), ``lost`` says so."""

    def __init__(self, ctx: Context, model: Any, row_id: uuid.UUID, token: str) -> None:
        self.ctx, self.model, self.row_id, self.token = ctx, model, row_id, token
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"vowvault-lease-{row_id}")

    def start(self) -> Lease:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.ctx.heartbeat_seconds):
            try:
                with self.ctx.catalog.session() as s:
                    done = s.execute(sa.update(self.model).where(
                        self.model.id == self.row_id, self.model.owner_token == self.token)
                        .values(heartbeat_at=now_sql(s, self.ctx),
                                lease_expires_at=until_sql(s, self.ctx,
                                                           self.ctx.lease_seconds)))
                if done.rowcount == 0 and not self.lost:
                    self.lost = True
                    log.error("%s %s is no longer this process's (reaped?): its result will "
                              "not be recorded", self.model.__tablename__, self.row_id)
            except Exception as exc:  # the work goes on; the lease is generous
                log.warning("lease of %s %s not renewed: %s", self.model.__tablename__,
                            self.row_id, exc)


def expired(session: Session, ctx: Context, model: Any) -> Any:
    """A SQL condition: the row's lease has run out (a row without a lease: its heartbeat
    is older than the context's ``stale_after``)."""
    now = now_sql(session, ctx)
    stale_before = now - sa.literal(ctx.stale_after) if not isinstance(now, dt.datetime) \
        else now - ctx.stale_after
    return sa.or_(model.lease_expires_at < now,
                  sa.and_(model.lease_expires_at.is_(None),
                          sa.func.coalesce(model.heartbeat_at, model.created_at) <
                          stale_before))
