"""The audit key, and the audit head kept outside the catalog.

The key that chains the audit log (``catalog.audit``) never enters the catalog
(``keys.audit``). One chain per catalog: the service appends under one lock, the operator
verifies the whole log, and the anchor on each target is one small object.

After each backup the newest row's id and hash are written to every target the backup went
to (``repository.anchor``), with a MAC under the key. ``verify`` checks the chain with the
key, then that it holds the newest anchor found on the targets and, if given, the head the
operator kept (``--expect-head``): deleting the newest rows, deleting every row, or
editing a row and recomputing every later hash is each reported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass, field

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import AuditEntry, BackupPolicy, Organization, StorageTarget
from vowvault.engine.context import Context, log
from vowvault.errors import ConfigError, VowvaultError
from vowvault.repository.anchor import Anchor, read_anchor, write_anchor
from vowvault.storage import StorageBackend


def _mac(key: bytes, row_id: int, row_hash: str) -> str:
    return hmac.new(key, f"audit-head:{row_id}:{row_hash}".encode(), hashlib.sha256
                    ).hexdigest()


def anchor(ctx: Context, backends: list[StorageBackend]) -> None:
    """Write the audit head to ``backends`` (a failure is a warning: the backup stands)."""
    key = ctx.catalog.audit_key
    if key is None or not backends:
        return
    with ctx.catalog.read() as s:
        head = s.execute(sa.select(AuditEntry.id, AuditEntry.row_hash)
                         .order_by(AuditEntry.id.desc()).limit(1)).first()
    if head is None:
        return
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record = Anchor(head[0], head[1], now, _mac(key, head[0], head[1]))
    for backend in backends:
        try:
            write_anchor(backend, record)
        except (VowvaultError, OSError) as exc:
            log.warning("audit head not written to %s: %s", backend.url, exc)


@dataclass
class AuditCheck:
    rows: int
    head: str
    head_id: int | None
    problems: list[audit.ChainProblem]
    anchors: list[str] = field(default_factory=list)
    """What the targets' anchors said (one line per target)."""
    failures: list[str] = field(default_factory=list)
    """Whole-chain problems: a head not found, rows missing after an anchor."""


def verify(ctx: Context, expect_head: str | None = None) -> AuditCheck:
    if expect_head is not None:
        expect_head = expect_head.strip().lower()
        if len(expect_head) != 64 or any(c not in "0123456789abcdef" for c in expect_head):
            raise ConfigError(f"--expect-head {expect_head!r} is not an audit head: give the 64 "
                              f"hex digits an earlier `vowvault audit verify` printed")
    key = ctx.catalog.audit_key
    with ctx.catalog.read() as s:
        rows = audit.all_rows(s)
        used = set(s.execute(sa.select(StorageTarget.url)).scalars())  # written to once
        targets = {}
        for targets_of, slug in s.execute(
                sa.select(BackupPolicy.storage_targets, Organization.slug)
                .join(Organization, Organization.id == BackupPolicy.organization_id)):
            for t in targets_of:
                if t["url"] in used and ctx.rules.allows_storage(slug, t["url"]):
                    targets.setdefault(t["url"], (t.get("credentials_secret"), slug))
    problems = audit.verify_chain(rows, key)
    by_id = {r.id: r.row_hash for r in rows}
    check = AuditCheck(len(rows), rows[-1].row_hash if rows else audit.GENESIS,
                       rows[-1].id if rows else None, problems)
    newest: tuple[Anchor, str] | None = None
    for url, (secret, slug) in sorted(targets.items()):
        try:
            found = read_anchor(ctx.backend(url, secret, org=slug))
        except (VowvaultError, OSError) as exc:
            check.anchors.append(f"{url}: unreachable ({exc})")
            continue
        if found is None:
            check.anchors.append(f"{url}: no audit head")
            continue
        if key is None or not hmac.compare_digest(found.mac,
                                                  _mac(key, found.row_id, found.row_hash)):
            check.anchors.append(f"{url}: audit head not sealed with this audit key: ignored")
            continue
        check.anchors.append(f"{url}: row {found.row_id} at {found.written_at}")
        if newest is None or found.row_id > newest[0].row_id:
            newest = (found, url)
    if newest is not None:
        found, url = newest
        if by_id.get(found.row_id) != found.row_hash:
            check.failures.append(
                f"the audit head on {url} (row {found.row_id}, written {found.written_at}) is "
                f"not in the catalog's chain: rows were deleted or rewritten")
    if expect_head is not None and expect_head not in by_id.values():
        check.failures.append(f"the expected head {expect_head} is not in the chain: rows "
                              f"were deleted or rewritten")
    return check
