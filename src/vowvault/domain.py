"""The domain's vocabulary, shared by every layer (storage, codec, sources, the data plane,
the catalog, the engine): what kinds of backups, statuses, priorities and tiers exist.

Plain enumerations, no behaviour beyond their order. The catalog stores seven of them as
PostgreSQL enum types (the report's four plus recovery_status, recovery_type and
vendor_type); smaller state sets that are likely to grow (copy status, key status...) are
VARCHAR columns with CHECK constraints there, which are cheaper to migrate than enum types.
"""

from __future__ import annotations

import enum


class BackupType(enum.StrEnum):
    FULL = "FULL"
    INCREMENTAL = "INCREMENTAL"
    DIFFERENTIAL = "DIFFERENTIAL"
    TRANSACTION_LOG = "TRANSACTION_LOG"
    CONFIGURATION = "CONFIGURATION"
    USER_DATA = "USER_DATA"


class BackupStatus(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CORRUPTED = "CORRUPTED"
    EXPIRED = "EXPIRED"


class Priority(enum.StrEnum):
    """Ordered from least to most urgent; ``rank`` gives the order."""

    LOW = "LOW"
    NORMAL = "NORMAL"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"
    EMERGENCY = "EMERGENCY"

    @property
    def rank(self) -> int:
        return list(Priority).index(self)


class Tier(enum.StrEnum):
    """Storage tiers from the most to the least accessible; ``rank`` gives the order."""

    HOT = "HOT"
    WARM = "WARM"
    COLD = "COLD"
    ARCHIVE = "ARCHIVE"
    DEEP_ARCHIVE = "DEEP_ARCHIVE"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)


class RecoveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    VALIDATING = "VALIDATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class RecoveryType(enum.StrEnum):
    FULL_RESTORE = "FULL_RESTORE"
    POINT_IN_TIME = "POINT_IN_TIME"
    PARTIAL = "PARTIAL"
    DR_DRILL = "DR_DRILL"
    EMERGENCY = "EMERGENCY"


class VendorType(enum.StrEnum):
    PHOTOGRAPHER = "PHOTOGRAPHER"
    VIDEOGRAPHER = "VIDEOGRAPHER"
    VENUE = "VENUE"
    FLORIST = "FLORIST"
    PLANNER = "PLANNER"
    CATERER = "CATERER"
    PLATFORM = "PLATFORM"
    OTHER = "OTHER"


class SourceKind(enum.StrEnum):
    POSTGRES_LOGICAL = "POSTGRES_LOGICAL"
    POSTGRES_PHYSICAL = "POSTGRES_PHYSICAL"
    DIRECTORY = "DIRECTORY"


class CopyRole(enum.StrEnum):
    PRIMARY = "PRIMARY"
    COPY = "COPY"


class ObjectKind(enum.StrEnum):
    DATA = "DATA"
    INDEX = "INDEX"
    MANIFEST = "MANIFEST"
    KEY = "KEY"


class CopyStatus(enum.StrEnum):
    """Life of one stored object: written, read back and proven, or gone."""

    PENDING = "PENDING"
    STORED = "STORED"
    VERIFIED = "VERIFIED"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"


class CopyHealth(enum.StrEnum):
    """What the last check of one copy of a backup found (a copy: a target's objects of the
    backup). Reachability is not integrity: a target that did not answer, or whose
    repository marker is missing (an unmounted NAS), is UNREACHABLE, never DAMAGED."""

    UNCHECKED = "UNCHECKED"
    INTACT = "INTACT"
    DAMAGED = "DAMAGED"
    """An object reads back wrong (a flipped bit, a truncation, another backup's frames)."""
    MISSING = "MISSING"
    """The target answered, its marker is right, and an object is not there."""
    UNREACHABLE = "UNREACHABLE"


class VerificationStatus(enum.StrEnum):
    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    FAILED = "FAILED"


class KeyStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"
    DESTROYED = "DESTROYED"


class ErasureSubject(enum.StrEnum):
    COUPLE = "COUPLE"
    WEDDING = "WEDDING"
    VENDOR = "VENDOR"
    PERSON = "PERSON"


class ErasureStatus(enum.StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"
    GAVE_UP = "GAVE_UP"
