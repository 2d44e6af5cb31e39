"""Applying a policy file to the catalog: plan the changes, then make them.

The file is the desired state of the organizations it declares: policies of those
organizations that the file no longer lists are deactivated (never deleted, their history
stays); organizations the file does not mention are left alone. Applying the same file twice
changes nothing the second time. Every change appends an audit row.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.db import Catalog
from vowvault.catalog.models import BackupPolicy, Organization, WeddingDate
from vowvault.errors import PolicyError
from vowvault.policies.spec import PolicyFile, PolicySpec

Action = Literal["create", "update", "deactivate", "reactivate", "unchanged"]


@dataclass
class Change:
    kind: Literal["organization", "policy", "wedding", "webhook"]
    action: Action
    name: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.fields or self.action in ("create", "unchanged"):
            return f"{self.action:<10} {self.kind} {self.name}"
        diffs = "; ".join(f"{k}: {_text(a)} -> {_text(b)}"
                          for field, (old, new) in self.fields.items()
                          for k, a, b in _leaves(field, old, new))
        return f"{self.action:<10} {self.kind} {self.name} ({diffs})"


def _leaves(key: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """Only what differs, by its dotted key (``source_config.path``), whole: a change
    that is cut short cannot be read."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [leaf for k in sorted(old.keys() | new.keys(), key=str)
                for leaf in _leaves(f"{key}.{k}", old.get(k), new.get(k))
                if old.get(k) != new.get(k)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [leaf for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b
                for leaf in _leaves(f"{key}[{i}]", a, b)]
    return [(key, old, new)]


def _text(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 400 else text[:397] + "..."


def policy_values(spec: PolicySpec) -> dict[str, Any]:
    """The catalog columns of a policy, as JSON-comparable values."""
    values: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "backup_type": spec.backup_type.value,
        "source_kind": spec.source.source_kind.value,
        "source_config": spec.source.model_dump(mode="json"),
        "priority": spec.priority.value,
        "schedule_cron": spec.schedule.cron,
        "timezone": spec.schedule.timezone,
        "peak_season_multiplier": spec.peak_season.multiplier,
        "effective_schedules": spec.schedules(),
        "retention_days": spec.retention.days,
        "keep_last": spec.retention.keep_last,
        "keep_daily": spec.retention.keep_daily,
        "keep_weekly": spec.retention.keep_weekly,
        "keep_monthly": spec.retention.keep_monthly,
        "keep_yearly": spec.retention.keep_yearly,
        "min_verified_backups": spec.retention.min_verified,
        "legal_hold_years": spec.hold_years,
        "wedding_day_priority": spec.wedding_day_priority,
        "vendor_type": spec.vendor_type.value if spec.vendor_type else None,
        "storage_tier": spec.storage[0].tier.value,
        "storage_targets": [t.model_dump(mode="json") for t in spec.storage],
        "encryption_enabled": spec.encryption.enabled,
        "key_provider": spec.encryption.key_provider,
        "lifecycle_rules": [r.model_dump(mode="json") for r in spec.lifecycle],
        "max_retries": spec.max_retries,
        "rto_target_minutes": spec.rto_minutes,
        "full_every_days": spec.full_every_days,
        "verify_max_age_days": spec.verification.max_age_days,
        "scrub_cycle_days": spec.verification.scrub_cycle_days,
        "scrub_archived": spec.verification.scrub_archived,
        "is_active": spec.is_active,
    }
    values["spec_hash"] = hashlib.sha256(
        json.dumps(values, sort_keys=True).encode()).hexdigest()
    return values


def _row_values(row: BackupPolicy, keys: list[str]) -> dict[str, Any]:
    out = {}
    for key in keys:
        value = getattr(row, key)
        out[key] = value.value if hasattr(value, "value") else value
    return out


def apply_policy_file(catalog: Catalog, file: PolicyFile, *, actor: str,
                      dry_run: bool = False) -> list[Change]:
    """Bring the catalog to the file's state; return what changed (or would, with dry_run)."""
    with catalog.session(commit=not dry_run) as session:
        return _apply(session, file, actor)


def _apply(session: Session, file: PolicyFile, actor: str) -> list[Change]:
    changes: list[Change] = []
    orgs: dict[str, Organization] = {}
    for spec in file.organizations:
        org = session.execute(sa.select(Organization).where(Organization.slug == spec.slug)
                              ).scalar_one_or_none()
        wanted = {"name": spec.name, "vendor_type": spec.vendor_type.value}
        if org is None:
            org = Organization(id=uuid.uuid4(), slug=spec.slug, name=spec.name,
                               vendor_type=spec.vendor_type)
            session.add(org)
            session.flush()
            changes.append(Change("organization", "create", spec.slug))
            audit.record(session, actor=actor, action="organization.create",
                         target_type="organization", target_id=org.id, organization_id=org.id,
                         summary=f"organization {spec.slug} created", after=wanted)
        else:
            current = {"name": org.name, "vendor_type": org.vendor_type.value}
            diff = {k: (current[k], v) for k, v in wanted.items() if current[k] != v}
            if diff:
                org.name, org.vendor_type = spec.name, spec.vendor_type
                changes.append(Change("organization", "update", spec.slug, diff))
                audit.record(session, actor=actor, action="organization.update",
                             target_type="organization", target_id=org.id,
                             organization_id=org.id, summary=f"organization {spec.slug} updated",
                             before={k: a for k, (a, _) in diff.items()},
                             after={k: b for k, (_, b) in diff.items()})
        orgs[spec.slug] = org
        changes += _apply_webhooks(session, org, spec, actor)

    for spec in file.weddings:
        org = orgs[spec.organization]
        row = session.execute(sa.select(WeddingDate).where(
            WeddingDate.organization_id == org.id, WeddingDate.wedding_id == spec.wedding_id)
        ).scalar_one_or_none()
        label = f"{spec.organization}/{spec.wedding_id}"
        if row is None:
            session.add(WeddingDate(organization_id=org.id, wedding_id=spec.wedding_id,
                                    wedding_date=spec.date))
            changes.append(Change("wedding", "create", f"{label} on {spec.date}"))
            audit.record(session, actor=actor, action="wedding.create", target_type="wedding",
                         target_id=spec.wedding_id, organization_id=org.id,
                         summary=f"wedding on {spec.date} added", after={"date": spec.date})
        elif row.wedding_date != spec.date:
            changes.append(Change("wedding", "update", label,
                                  {"date": (str(row.wedding_date), str(spec.date))}))
            audit.record(session, actor=actor, action="wedding.update", target_type="wedding",
                         target_id=spec.wedding_id, organization_id=org.id,
                         summary="wedding date changed", before={"date": row.wedding_date},
                         after={"date": spec.date})
            row.wedding_date = spec.date

    listed = {p.name for p in file.policies}
    for spec in file.policies:
        org = orgs[spec.organization]
        wanted = policy_values(spec)
        row = session.execute(sa.select(BackupPolicy).where(BackupPolicy.name == spec.name)
                              ).scalar_one_or_none()
        if row is None:
            row = BackupPolicy(id=uuid.uuid4(), organization_id=org.id, **wanted)
            session.add(row)
            session.flush()
            changes.append(Change("policy", "create", spec.name))
            audit.record(session, actor=actor, action="policy.create", target_type="policy",
                         target_id=row.id, organization_id=org.id,
                         summary=f"policy {spec.name} created", after=_summary(wanted))
            continue
        if row.organization_id != org.id:
            raise PolicyError("already belongs to another organization; policy names are "
                              "unique, pick another name", policy=spec.name)
        current = _row_values(row, list(wanted))
        diff = {k: (current[k], v) for k, v in wanted.items()
                if k != "spec_hash" and current[k] != v}
        if not diff:
            changes.append(Change("policy", "unchanged", spec.name))
            continue
        action: Action = "reactivate" if diff.get("is_active") == (False, True) else "update"
        for key, (_, value) in diff.items():
            setattr(row, key, value)
        row.spec_hash = wanted["spec_hash"]
        changes.append(Change("policy", action, spec.name, diff))
        audit.record(session, actor=actor, action=f"policy.{action}", target_type="policy",
                     target_id=row.id, organization_id=org.id,
                     summary=f"policy {spec.name} {action}d",
                     before={k: a for k, (a, _) in diff.items()},
                     after={k: b for k, (_, b) in diff.items()})

    org_ids = [o.id for o in orgs.values()]
    stale = session.execute(sa.select(BackupPolicy).where(
        BackupPolicy.organization_id.in_(org_ids), BackupPolicy.is_active.is_(True),
        BackupPolicy.name.not_in(listed))).scalars()
    for row in stale:
        row.is_active = False
        changes.append(Change("policy", "deactivate", row.name, {"is_active": (True, False)}))
        audit.record(session, actor=actor, action="policy.deactivate", target_type="policy",
                     target_id=row.id, organization_id=row.organization_id,
                     summary=f"policy {row.name} removed from the policy file: deactivated",
                     before={"is_active": True}, after={"is_active": False})
    session.flush()
    return changes


def deactivate_policy(catalog: Catalog, name: str, *, actor: str, why: str) -> bool:
    """Deactivate one policy (its history kept), audited; False if there is no such active
    policy."""
    with catalog.session() as session:
        row = session.execute(sa.select(BackupPolicy).where(
            BackupPolicy.name == name, BackupPolicy.is_active.is_(True))).scalar_one_or_none()
        if row is None:
            return False
        row.is_active = False
        audit.record(session, actor=actor, action="policy.deactivate", target_type="policy",
                     target_id=row.id, organization_id=row.organization_id,
                     summary=f"policy {name} deactivated: {why}",
                     before={"is_active": True}, after={"is_active": False})
    return True


def _summary(values: dict[str, Any]) -> dict[str, Any]:
    keep = ("backup_type", "source_kind", "priority", "schedule_cron", "timezone",
            "retention_days", "storage_tier", "is_active")
    return {k: values[k] for k in keep}


def _apply_webhooks(session: Session, org: Organization, spec: Any, actor: str) -> list[Change]:
    from vowvault.catalog.models import WebhookEndpoint

    changes: list[Change] = []
    current = {e.url: e for e in session.execute(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.organization_id == org.id)).scalars()}
    for hook in spec.webhooks:
        wanted = {"secret_ref": hook.secret, "events": list(hook.events), "is_active": True}
        row = current.pop(hook.url, None)
        if row is None:
            session.add(WebhookEndpoint(id=uuid.uuid4(), organization_id=org.id, url=hook.url,
                                        **wanted))
            action: Action = "create"
        elif {"secret_ref": row.secret_ref, "events": list(row.events),
              "is_active": row.is_active} != wanted:
            row.secret_ref, row.events, row.is_active = (wanted["secret_ref"],
                                                         wanted["events"], True)
            action = "update"
        else:
            continue
        changes.append(Change("webhook", action, f"{org.slug} {hook.url}"))
        audit.record(session, actor=actor, action=f"webhook.{action}", target_type="webhook",
                     target_id=hook.url, organization_id=org.id,
                     summary=f"webhook {hook.url} {action}d", after={"events": hook.events})
    for url, row in current.items():
        if row.is_active:
            row.is_active = False
            changes.append(Change("webhook", "deactivate", f"{org.slug} {url}"))
            audit.record(session, actor=actor, action="webhook.deactivate",
                         target_type="webhook", target_id=url, organization_id=org.id,
                         summary=f"webhook {url} removed from the policy file")
    return changes
