"""Maintenance flows, each deployed from prefect.yaml. They never start heavy work on a
Saturday or a wedding date unless forced, and say so in their run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.maintenance import counts, gate, key_check, preview


def _gated(kind: str, force: bool) -> dict[str, Any]:
    allowed, why = gate(force)
    if not allowed:
        return {"skipped": why}
    return {"plan": preview(kind)}


@flow(name="lifecycle")
def lifecycle(force: bool = False) -> dict[str, Any]:
    """Move backups to colder tiers as their policies' rules say (plan shown as an artifact)."""
    return _gated("lifecycle", force)


@flow(name="retention")
def retention(force: bool = False) -> dict[str, Any]:
    """Expire backups no rule keeps (plan shown as an artifact)."""
    return _gated("retention", force)


@flow(name="gdpr-erasure")
def gdpr_erasure(force: bool = False) -> dict[str, Any]:
    """Honour erasure requests in backups (pending requests shown as an artifact)."""
    return _gated("gdpr", force)


@flow(name="analytics")
def analytics(day: str | None = None) -> dict[str, Any]:
    """Daily numbers per policy, and keys due for rotation (light: runs every day,
    Saturdays included)."""
    return {"counts": counts(day), "keys_due": key_check()}
