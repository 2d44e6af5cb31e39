"""The audit log: append-only and chained with a key the catalog never holds.

Each row stores ``prev_hash`` (the ``row_hash`` of the row before it, or 64 zeros for the
first) and ``row_hash`` = HMAC-SHA256, under the audit key, of ``prev_hash`` and the row's
canonical JSON. The audit key comes from the key provider side (``engine.auditkey``), never
from the catalog, so a catalog superuser can delete, insert or edit rows but cannot make a
chain that verifies: editing a row changes its hash, deleting or reordering rows breaks
the chain, and recomputing the later hashes needs the key. Deleting the newest rows (or all
of them) leaves a valid shorter chain: that is caught against a head kept outside the
catalog (the anchor written to every storage target with each backup, and
``audit verify --expect-head``). On PostgreSQL a trigger also rejects UPDATE and DELETE.

Rows written before a catalog had an audit key are chained with plain SHA-256; they are
accepted only before the first keyed row (one forged later would need the key as well).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog.models import AuditEntry, utcnow

GENESIS = "0" * 64
_ATTEMPTS = 5


def _plain(value: Any) -> Any:
    """JSON-safe, and stable across a JSON/JSONB round trip."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def row_digest(prev_hash: str, *, occurred_at: dt.datetime, actor: str,
               actor_role: str | None, action: str, target_type: str, target_id: str | None,
               organization_id: uuid.UUID | None, summary: str | None, before: Any,
               after: Any, key: bytes | None = None) -> str:
    body = {
        "occurred_at": occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": actor, "actor_role": actor_role, "action": action,
        "target_type": target_type, "target_id": target_id,
        "organization_id": str(organization_id) if organization_id else None,
        "summary": summary, "before": before, "after": after,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    message = (prev_hash + canonical).encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


KEY = "vowvault.audit_key"
"""Where a session carries the audit key (``Session.info``), set by the catalog handle."""


def record(session: Session, *, actor: str, action: str, target_type: str,
           target_id: str | uuid.UUID | None = None, organization_id: uuid.UUID | None = None,
           summary: str | None = None, before: Any = None, after: Any = None,
           actor_role: str | None = None) -> AuditEntry:
    """Append one row to the chain, inside the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        # Serialise appenders so they do not race for the head and retry.
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('vowvault.audit_log'))"))
    before, after = _plain(before), _plain(after)
    target = str(target_id) if target_id is not None else None
    for attempt in range(_ATTEMPTS):
        head = session.execute(
            sa.select(AuditEntry.row_hash).order_by(AuditEntry.id.desc()).limit(1)
        ).scalar_one_or_none() or GENESIS
        now = utcnow()
        entry = AuditEntry(
            occurred_at=now, actor=actor, actor_role=actor_role, action=action,
            target_type=target_type, target_id=target, organization_id=organization_id,
            summary=summary, before=before, after=after, prev_hash=head,
            row_hash=row_digest(head, occurred_at=now, actor=actor, actor_role=actor_role,
                                action=action, target_type=target_type, target_id=target,
                                organization_id=organization_id, summary=summary,
                                before=before, after=after, key=session.info.get(KEY)))
        try:
            with session.begin_nested():
                session.add(entry)
            return entry
        except sa.exc.IntegrityError:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ChainProblem:
    row_id: int
    problem: str


def verify_chain(rows: Iterable[AuditEntry], key: bytes | None = None) -> list[ChainProblem]:
    """Walk rows in id order; report every edited row and every break in the chain. With
    ``key``, unkeyed rows are accepted only before the first keyed one."""
    problems: list[ChainProblem] = []
    expected_prev = GENESIS
    keyed = False
    for row in rows:
        if row.prev_hash != expected_prev:
            problems.append(ChainProblem(row.id, "chain broken before this row: a row was "
                                                 "deleted, inserted or reordered"))
        fields = dict(occurred_at=row.occurred_at, actor=row.actor,
                      actor_role=row.actor_role, action=row.action,
                      target_type=row.target_type, target_id=row.target_id,
                      organization_id=row.organization_id, summary=row.summary,
                      before=row.before, after=row.after)
        if key is not None and hmac.compare_digest(
                row_digest(row.prev_hash, key=key, **fields), row.row_hash):
            keyed = True
        elif row_digest(row.prev_hash, **fields) == row.row_hash:
            if keyed:
                problems.append(ChainProblem(row.id, "row is not keyed although rows before "
                                                     "it are: it was forged or rewritten"))
        elif key is None:
            problems.append(ChainProblem(row.id, "row content does not match its hash: it "
                                                 "was edited, or it is keyed and this check "
                                                 "has no audit key"))
        else:
            problems.append(ChainProblem(row.id, "row content does not match its hash: "
                                                 "it was edited"))
        expected_prev = row.row_hash
    return problems


def all_rows(session: Session) -> list[AuditEntry]:
    return list(session.execute(sa.select(AuditEntry).order_by(AuditEntry.id)).scalars())
