"""A copy: one storage target that holds (or is to hold) a backup."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from vowvault.domain import Tier
from vowvault.storage import StorageBackend


@dataclass(frozen=True)
class Copy:
    url: str
    backend: StorageBackend
    required: bool = True
    """A required copy that cannot be written or read back fails the backup; an optional
    one is dropped with a warning."""
    tier: Tier = Tier.HOT
    """Where the data object goes; small objects stay readable (``layout.tier_for``)."""
    marker: uuid.UUID | None = None
    """The repository marker the target must hold (``marker``): a missing object on a
    target whose marker is gone too means the target is unavailable, not the object."""
