"""``vowvault backup repair``: make every copy of a backup whole again from what the others hold.

A fresh check of every copy comes first (``verify``). Each DAMAGED or MISSING copy is then
rewritten from the stored records the copies hold intact between them (frame by frame:
two copies damaged in different places repair each other), checked again on its own, and
recorded. Copies out of reach are left for later. Nothing is repaired when no copy, alone
or together, holds the backup intact.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import ObjectKind, Tier
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.engine.kek import org_keys
from vowvault.engine.lookup import find_backup
from vowvault.engine.verify import record, verify_stored
from vowvault.errors import IntegrityError, VowvaultError
from vowvault.repository.reader import BackupReader
from vowvault.repository.repair import rewrite_copy

_KINDS = {ObjectKind.KEY: "key", ObjectKind.DATA: "data", ObjectKind.INDEX: "index",
          ObjectKind.MANIFEST: "manifest"}


@dataclass
class RepairReport:
    backup_id: str
    repaired: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    intact: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def repair_backup(ctx: Context, backup_ref: str, *, dry_run: bool = False) -> RepairReport:
    with ctx.catalog.read() as s:
        job = find_backup(s, backup_ref)
        stored = objects.read_stored(s, job)
        keys = org_keys(s, job.organization_id)
        tiers = {(r.storage_url, _KINDS[r.object_kind]): r.storage_tier
                 for r in s.execute(sa.select(BackupStorage).where(
                     BackupStorage.backup_job_id == job.id)).scalars()}
    check = verify_stored(ctx, stored, keys, references=False)
    record(ctx, check, stored.id)
    report = RepairReport(str(stored.id))
    report.intact = [c.url for c in check.copies if c.ok]
    report.unreachable = [c.url for c in check.copies if c.unreachable]
    bad = [c.url for c in check.corrupted]
    if not bad or dry_run:
        report.failed = {url: "would be rewritten" for url in bad} if dry_run else {}
        return report
    if not check.restorable:
        raise IntegrityError(f"backup {stored.id} cannot be repaired: no copy holds it "
                             f"intact, alone or together ({check.problem})")
    copies = [c for c in objects.copies(ctx, stored) if c.url not in report.unreachable]
    dek = objects.data_key(ctx, stored)
    assert stored.key is not None and stored.wrapped_dek is not None
    key_object = stored.key.key_object(stored.id, stored.wrapped_dek).to_bytes()
    for url in bad:
        target = next(c for c in copies if c.url == url)
        # Read from the others first; the damaged copy may still serve frames they lack.
        reader = BackupReader(stored.location, dek,
                              [*(c for c in copies if c.url != url), target],
                              expected_manifest_sha=stored.manifest_sha256)
        try:
            written = rewrite_copy(reader, target, key_object,
                                   lambda kind, url=url: tiers.get((url, kind), Tier.HOT))
        except VowvaultError as exc:
            report.failed[url] = str(exc)
            log.error("repair of backup %s on %s failed: %s", stored.id, url, exc)
            continue
        log.info("copy %s of backup %s rewritten (%d bytes)", url, stored.id, written)
        report.repaired.append(url)
    final = verify_stored(ctx, stored, keys, references=False)
    record(ctx, final, stored.id)
    for c in final.copies:
        if c.url in report.repaired and not c.ok:
            report.repaired.remove(c.url)
            report.failed[c.url] = f"still {c.health.value.lower()}: {c.problem}"
    with ctx.catalog.session() as s:
        j = s.get(BackupJob, uuid.UUID(report.backup_id))
        assert j is not None
        audit.record(s, actor=ctx.settings.actor, action="backup.repair",
                     target_type="backup", target_id=j.id, organization_id=j.organization_id,
                     summary=f"copies rewritten from intact ones: "
                             f"{', '.join(report.repaired) or 'none'}"
                             + (f"; failed: {', '.join(report.failed)}" if report.failed
                                else ""))
    return report

