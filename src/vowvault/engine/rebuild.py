"""Rebuilding a lost catalog from what a storage target holds.

Every backup on a target is its objects under ``<organization>/<policy>/<backup>/``: the key
object names the KEK version that wraps its data key, and the manifest (opened with that
key, from the key provider) names its organization, policy, type, time, parent and
references, and since 2026-12 the organization's slug and name and the policy's name
(``catalog`` section). ``rebuild`` turns them back into catalog rows in one transaction:
organizations, key versions (references only, as always), policies (by id and name,
inactive, keeping everything until a ``policies apply`` gives them their rules back; apply
matches them by organization and name and keeps their ids), backups COMPLETED and unverified
(``vowvault backup verify`` proves them again), their copies on this target, the target's marker.
A backup whose key object or manifest does not open is named in the report, never recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    EncryptionKey,
    Organization,
    StorageTarget,
)
from vowvault.domain import (
    BackupStatus,
    BackupType,
    CopyHealth,
    CopyRole,
    CopyStatus,
    KeyStatus,
    ObjectKind,
    SourceKind,
)
from vowvault.engine.context import Context
from vowvault.errors import CatalogError, ConfigError, VowvaultError
from vowvault.keys import KeyContext
from vowvault.repository import BackupLocation, Copy
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.layout import KEY, MANIFEST
from vowvault.repository.marker import read_marker
from vowvault.repository.reader import BackupReader
from vowvault.storage import open_backend
from vowvault.storage.url import parse_target_url

KEEP_DAYS = 36500
"""A rebuilt policy keeps everything until its real rules are applied again."""


@dataclass
class Found:
    location: BackupLocation
    key: KeyObject
    manifest_sha: str
    manifest: object
    sizes: dict[str, int]


@dataclass
class RebuildReport:
    organizations: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    backups: int = 0
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """What the manifests did not say (older backups): named, filled with placeholders."""


def _layout(name: str) -> tuple[uuid.UUID, uuid.UUID | None, uuid.UUID, str] | None:
    parts = name.split("/")
    if len(parts) != 4:
        return None
    try:
        return (uuid.UUID(parts[0]), None if parts[1] == "adhoc" else uuid.UUID(parts[1]),
                uuid.UUID(parts[2]), parts[3])
    except ValueError:
        return None


def rebuild(ctx: Context, url: str, secret: str | None = None) -> RebuildReport:
    with ctx.catalog.read() as s:
        if s.execute(sa.select(sa.func.count()).select_from(BackupJob)).scalar():
            raise ConfigError("the catalog already holds backups: rebuild into a new, empty "
                              "catalog (`vowvault --new-catalog catalog rebuild ...`)")
    backend = open_backend(url, credentials_secret=secret)  # the operator's own URL
    marker = read_marker(backend)
    if marker is None:
        raise ConfigError(f"{url} holds no vowvault repository marker: not a target of "
                          f"vowvault, or not mounted")
    groups: dict[BackupLocation, dict[str, int]] = {}
    for obj in backend.list(""):
        parsed = _layout(obj.name)
        if parsed is not None:
            org, policy, backup, kind = parsed
            groups.setdefault(BackupLocation(org, policy, backup), {})[kind] = obj.size
    report = RebuildReport()
    found: list[Found] = []
    for location, sizes in sorted(groups.items(), key=lambda g: str(g[0].backup_id)):
        if KEY not in sizes or MANIFEST not in sizes:
            report.skipped.append(f"{location.prefix}: no key object or manifest (an "
                                  f"interrupted backup's leftovers)")
            continue
        try:
            key = KeyObject.from_bytes(backend.load(location.name(KEY)), location.backup_id)
            dek = ctx.keys(key.provider).unwrap(
                key.key_ref, key.wrapped_dek,
                KeyContext(location.organization_id, "", location.backup_id, key.version))
            reader = BackupReader(location, dek, [Copy(url, backend, marker=marker.repository_id)])
            manifest = reader.manifest
        except VowvaultError as exc:
            report.skipped.append(f"{location.prefix}: {exc}")
            continue
        found.append(Found(location, key, hashlib.sha256(reader.manifest_bytes).hexdigest(),
                           manifest, sizes))
    if not found:
        raise CatalogError(f"nothing on {url} could be opened: "
                           + ("; ".join(report.skipped[:3]) or "it holds no backups"))
    _record(ctx, url, marker.repository_id, found, report)
    return report


def _record(ctx: Context, url: str, marker_id: uuid.UUID, found: list[Found],
            report: RebuildReport) -> None:
    provider = parse_target_url(url).provider
    now = ctx.clock()
    with ctx.catalog.session() as s:
        orgs: dict[uuid.UUID, Organization] = {}
        keys: dict[tuple[uuid.UUID, int], EncryptionKey] = {}
        policies: dict[uuid.UUID, BackupPolicy] = {}
        jobs: list[tuple[BackupJob, str | None]] = []
        for f in found:
            m = f.manifest
            section = dict(m.sections.get("catalog") or {})  # type: ignore[attr-defined]
            org_id = f.location.organization_id
            if org_id not in orgs:
                slug = section.get("organization")
                if not slug:
                    slug = f"org-{str(org_id)[:8]}"
                    report.missing.append(f"organization {org_id}: slug and name (backups "
                                          f"older than 2026-12); recorded as {slug}")
                orgs[org_id] = Organization(id=org_id, slug=slug,
                                            name=section.get("organization_name") or slug)
                s.add(orgs[org_id])
                s.flush()  # parents first: no relationship orders them
                report.organizations.append(slug)
            kid = (org_id, f.key.version)
            if kid not in keys:
                keys[kid] = EncryptionKey(id=uuid.uuid4(), organization_id=org_id,
                                          version=f.key.version, provider=f.key.provider,
                                          key_ref=f.key.key_ref, status=KeyStatus.RETIRED)
                s.add(keys[kid])
                s.flush()  # parents first: no relationship orders them
            policy_id = f.location.policy_id
            if policy_id is not None and policy_id not in policies:
                name = str(getattr(m, "policy", "") or section.get("policy")
                           or f"rebuilt-{str(policy_id)[:8]}")
                kind = SourceKind(section["source_kind"]) if section.get("source_kind") else \
                    (SourceKind.DIRECTORY if m.source_kind == "directory"  # type: ignore[attr-defined]
                     else SourceKind.POSTGRES_LOGICAL)
                policies[policy_id] = BackupPolicy(
                    id=policy_id, organization_id=org_id, name=name,
                    backup_type=BackupType.FULL, source_kind=kind, source_config={},
                    schedule_cron="0 2 * * *", effective_schedules=["0 2 * * *"],
                    retention_days=KEEP_DAYS, storage_targets=[{"url": url}],
                    lifecycle_rules=[], key_provider=section.get("key_provider")
                    or f.key.provider, is_active=False, spec_hash="rebuilt")
                s.add(policies[policy_id])
                s.flush()  # parents first: no relationship orders them
                report.policies.append(name)
            created = dt.datetime.fromisoformat(m.created_at)  # type: ignore[attr-defined]
            job = BackupJob(id=f.location.backup_id, organization_id=org_id,
                            policy_id=policy_id, job_name=f"rebuilt-{f.location.backup_id}",
                            backup_type=BackupType(m.backup_type),  # type: ignore[attr-defined]
                            status=BackupStatus.COMPLETED, scheduled_at=created,
                            created_at=created, completed_at=created,
                            encryption_key_id=keys[kid].id, wrapped_dek=f.key.wrapped_dek,
                            manifest_sha256=f.manifest_sha,
                            source_info={**m.source,  # type: ignore[attr-defined]
                                         "references": list(m.references)},  # type: ignore[attr-defined]
                            stored_bytes=sum(f.sizes.values()))
            s.add(job)
            s.flush()  # parents first: no relationship orders them
            jobs.append((job, m.parent))  # type: ignore[attr-defined]
            for kind_name, size in f.sizes.items():
                s.add(BackupStorage(
                    organization_id=org_id, backup_job_id=job.id, storage_provider=provider,
                    storage_url=url, copy_role=CopyRole.PRIMARY,
                    object_kind=ObjectKind(kind_name.upper()),
                    file_path=f.location.name(kind_name), file_size_bytes=size,
                    status=CopyStatus.STORED, health=CopyHealth.UNCHECKED))
            report.backups += 1
        for (org_id, _version), key in keys.items():  # the newest version of each is active
            newest = max(v for (o, v) in keys if o == org_id)
            if key.version == newest:
                key.status = KeyStatus.ACTIVE
        if s.execute(sa.select(StorageTarget).where(StorageTarget.url == url)
                     ).scalar_one_or_none() is None:
            s.add(StorageTarget(id=uuid.uuid4(), url=url, marker_id=marker_id))
        s.flush()
        rebuilt = {job.id for job, _ in jobs}
        for job, parent in jobs:
            if parent and uuid.UUID(parent) in rebuilt:
                job.parent_job_id = uuid.UUID(parent)
        audit.record(s, actor=ctx.settings.actor, action="catalog.rebuild",
                     target_type="storage_target", target_id=url,
                     summary=f"catalog rebuilt from {url} at {now:%Y-%m-%d %H:%M}: "
                             f"{len(orgs)} organizations, {len(policies)} policies, "
                             f"{report.backups} backups")
