"""Where a backup's objects live on a target: ``<org>/<policy>/<backup>/<kind>``.

Identifiers only, nothing that names a customer. The kinds a backup may hold are listed in
the order they are written: the key first, the manifest last (a backup without its
manifest is incomplete).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from vowvault.domain import Tier

KEY, DATA, INDEX, MANIFEST = "key", "data", "index", "manifest"
WRITE_ORDER = (KEY, DATA, INDEX, MANIFEST)


@dataclass(frozen=True)
class BackupLocation:
    organization_id: uuid.UUID
    policy_id: uuid.UUID | None
    backup_id: uuid.UUID

    @property
    def prefix(self) -> str:
        return f"{self.organization_id}/{self.policy_id or 'adhoc'}/{self.backup_id}/"

    def name(self, kind: str) -> str:
        return self.prefix + kind

    def holds(self, name: str) -> bool:
        """Whether an object name lies under this backup's prefix (and climbs nowhere)."""
        rest = name[len(self.prefix):] if name.startswith(self.prefix) else ""
        return bool(rest) and not any(p in ("", ".", "..") for p in rest.split("/"))


def tier_for(kind: str, tier: Tier) -> Tier:
    """The tier an object of ``kind`` is written to on a copy whose data goes to ``tier``:
    the key, index and manifest stay readable without an archive restore (COLD is still
    instantly readable on every provider), so listing, verifying and restoring never wait
    for a retrieval to start."""
    if kind == DATA:
        return tier
    return tier if tier.rank <= Tier.COLD.rank else Tier.COLD
