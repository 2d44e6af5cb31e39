"""What the maintenance flows share: the never-on-a-wedding-day gate, and the pending
erasure requests (the work itself is in lifecycle, retention, erasure, analytics)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from vowvault.catalog.models import (
    ErasureRequest,
    WeddingDate,
)
from vowvault.domain import ErasureStatus
from vowvault.engine.context import Context
from vowvault.plan import maintenance_allowed


def gate(ctx: Context, force: bool = False) -> tuple[bool, str]:
    """May heavy maintenance start now? Not on a Saturday nor on any wedding date."""
    today = ctx.clock().date()
    with ctx.catalog.read() as s:
        dates = set(s.execute(sa.select(WeddingDate.wedding_date).where(
            WeddingDate.wedding_date == today)).scalars())
    return maintenance_allowed(today, dates, force)


def pending_erasures(ctx: Context) -> list[dict[str, Any]]:
    with ctx.catalog.read() as s:
        return [{"subject": r.subject_type.value, "ref": r.subject_ref,
                 "requested": r.requested_at.isoformat()}
                for r in s.execute(sa.select(ErasureRequest).where(
                    ErasureRequest.status != ErasureStatus.COMPLETED)).scalars()]
