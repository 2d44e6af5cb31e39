"""The policy file format, as pydantic models (documented in docs/POLICIES.md).

A policy file declares organizations, their wedding calendar and their backup policies.
Nothing in it may be a secret: passwords and cloud credentials are named (an environment
variable, a Prefect Secret block), never written, so that the file can live in git and its
contents in the catalog.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from vowvault.domain import BackupType, Priority, SourceKind, Tier, VendorType
from vowvault.errors import ConfigError
from vowvault.scheduling import (
    DEFAULT_PEAK_MULTIPLIER,
    PEAK_MONTHS,
    ScheduleError,
    effective_schedules,
    normalize_cron,
    zone,
)
from vowvault.storage.url import parse_target_url


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""Lower-case letters, digits and dashes: usable in object names and deployment names."""
TierField = Annotated[Tier, BeforeValidator(_upper)]
PriorityField = Annotated[Priority, BeforeValidator(_upper)]
BackupTypeField = Annotated[BackupType, BeforeValidator(_upper)]
VendorField = Annotated[VendorType, BeforeValidator(_upper)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WEBHOOK_EVENTS = ("backup_completed", "backup_failed", "verification_failed",
                  "drill_completed", "drill_failed", "restore_completed", "key_rotation_due",
                  "emergency_recovery")


class WebhookSpec(Strict):
    """Where to send events, signed with the secret ``secret`` names (Standard Webhooks:
    ``whsec_<base64>``), e.g. ``env:GRAND_HALL_WEBHOOK_SECRET``. ``events``: all when empty."""

    url: str
    secret: str
    events: list[Literal[WEBHOOK_EVENTS]] = Field(default_factory=list)  # type: ignore[valid-type]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {value!r}")
        if parts.password:
            raise ValueError("contains credentials")
        return value

    @field_validator("secret")
    @classmethod
    def _named(cls, value: str) -> str:
        if value.startswith("whsec_"):
            raise ValueError("is the secret itself; name it instead (env:NAME, file:/path, "
                             "or a Prefect Secret block)")
        return value


class OrganizationSpec(Strict):
    slug: Slug
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    vendor_type: VendorField = VendorType.OTHER
    webhooks: list[WebhookSpec] = Field(default_factory=list)


class WeddingSpec(Strict):
    organization: Slug
    wedding_id: uuid.UUID
    date: dt.date


class PostgresSource(Strict):
    """A PostgreSQL database (``mode: logical``, pg_dump) or the whole cluster it lives in
    (``mode: physical``: base backups over the replication protocol, plus continuous WAL
    archiving for point-in-time recovery). ``dsn`` is a libpq URL or key=value string
    without a password;
    the password comes from ``password_env``, ``password_secret`` (a Prefect Secret block),
    or libpq's own PGPASSWORD / .pgpass. ``validation_query`` (physical only): a query a
    point-in-time drill runs, read-only, in ``dsn``'s database of the recovered cluster; the
    drill passes only if it returns a row. ``spool_alert_mib`` (default 1024) and
    ``pg_wal_alert_mib`` (default 4096), physical only: sizes of the WAL spool and of the
    server's pg_wal past which a ``wal_backlog`` alert is raised."""

    kind: Literal["postgres"]
    dsn: str
    mode: Literal["logical", "physical"] = "logical"
    password_env: str | None = None
    password_secret: str | None = None
    validation_query: Annotated[str, Field(min_length=1, max_length=4000)] | None = None
    spool_alert_mib: Annotated[int, Field(ge=1)] | None = None
    pg_wal_alert_mib: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _physical_only(self) -> PostgresSource:
        for name in ("validation_query", "spool_alert_mib", "pg_wal_alert_mib"):
            if getattr(self, name) is not None and self.mode != "physical":
                raise ValueError(f"{name} is for mode: physical (continuous archiving and "
                                 f"point-in-time drills)")
        return self

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, value: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(value)
        except Exception as exc:  # psycopg raises ProgrammingError subclasses
            raise ValueError(f"not a libpq connection string: {exc}") from None
        if params.get("password"):
            raise ValueError("contains a password; remove it and use password_env, "
                             "password_secret or ~/.pgpass")
        if not params.get("dbname"):
            raise ValueError("names no database (add /dbname or dbname=...)")
        return value

    @property
    def source_kind(self) -> SourceKind:
        return SourceKind.POSTGRES_LOGICAL if self.mode == "logical" else \
            SourceKind.POSTGRES_PHYSICAL


class DirectorySource(Strict):
    """A file tree (photos, configuration). ``exclude`` holds glob patterns relative to
    ``path``; ``on_unreadable``: fail (default) or warn."""

    kind: Literal["directory"]
    path: str
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = True
    on_unreadable: Literal["fail", "warn"] = "fail"
    """A file that cannot be read (permissions, I/O error): ``fail`` the backup (the
    default: nothing is silently missing), or ``warn``: back up the rest and list it."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, not {value!r}")
        return value.rstrip("/") or "/"

    @property
    def source_kind(self) -> SourceKind:
        return SourceKind.DIRECTORY


Source = Annotated[PostgresSource | DirectorySource, Field(discriminator="kind")]


class TargetSpec(Strict):
    """A storage target: ``file:///abs/path``, ``s3://bucket/prefix``, ``gs://bucket/prefix``
    or ``az://container/prefix``. Credentials come from the SDK's standard chain or from the
    Prefect Secret block named in ``credentials_secret``."""

    url: str
    tier: TierField = Tier.HOT
    required: bool = True
    credentials_secret: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.rstrip("/")
        try:
            parse_target_url(value)  # the backends' own rules
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def provider(self) -> str:
        return parse_target_url(self.url).provider


class ScheduleSpec(Strict):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            return normalize_cron(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value


class PeakSeasonSpec(Strict):
    """From May to October a policy runs ``multiplier`` times as often (extra schedules).
    ``schedules`` replaces the derived peak-season crons when given."""

    multiplier: Annotated[int, Field(ge=1, le=60)] = DEFAULT_PEAK_MULTIPLIER
    months: list[Annotated[int, Field(ge=1, le=12)]] = Field(
        default_factory=lambda: list(PEAK_MONTHS))
    schedules: list[str] | None = None

    @field_validator("schedules")
    @classmethod
    def _crons(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        try:
            return [normalize_cron(c) for c in value]
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None


class RetentionSpec(Strict):
    """How long backups live. A backup is kept while any rule keeps it; ``min_verified``
    verified backups are always kept; a legal hold keeps everything for ``legal_hold_years``
    (7 when ``legal_retention`` is true and no number is given, UK practice)."""

    days: Annotated[int, Field(ge=1)] = 30
    keep_last: Annotated[int, Field(ge=0)] = 0
    keep_daily: Annotated[int, Field(ge=0)] = 0
    keep_weekly: Annotated[int, Field(ge=0)] = 0
    keep_monthly: Annotated[int, Field(ge=0)] = 0
    keep_yearly: Annotated[int, Field(ge=0)] = 0
    min_verified: Annotated[int, Field(ge=0)] = 1
    legal_retention: bool = False
    legal_hold_years: Annotated[int, Field(ge=0, le=100)] | None = None

    @property
    def hold_years(self) -> int:
        if self.legal_hold_years is not None:
            return self.legal_hold_years
        return 7 if self.legal_retention else 0


class VerificationSpec(Strict):
    """How fresh a proof of restorability must be, and how often stored data is re-read.

    ``max_age_days``: a backup counts as proven restorable (for ``retention.min_verified``,
    and to build an incremental on) this long after its last verification. Scrubbing re-reads
    every copy at least every ``scrub_cycle_days`` (so it must not exceed ``max_age_days``);
    ``scrub_archived`` rehydrates archive-tier data to scrub it (retrieval fees apply)."""

    max_age_days: Annotated[int, Field(ge=1, le=3660)] = 45
    scrub_cycle_days: Annotated[int, Field(ge=1, le=3660)] = 30
    scrub_archived: bool = False

    @model_validator(mode="after")
    def _cycle_within_age(self) -> VerificationSpec:
        if self.scrub_cycle_days > self.max_age_days:
            raise ValueError(f"scrub_cycle_days {self.scrub_cycle_days} exceeds max_age_days "
                             f"{self.max_age_days}: backups would stop counting as verified "
                             f"before they are read back again")
        return self


class LifecycleRule(Strict):
    after_days: Annotated[int, Field(ge=0)]
    tier: TierField


DEFAULT_LIFECYCLE = (LifecycleRule(after_days=30, tier=Tier.COLD),
                     LifecycleRule(after_days=365, tier=Tier.ARCHIVE))
"""The report's defaults: HOT -> COLD after 30 days, COLD -> ARCHIVE after a year."""


class EncryptionSpec(Strict):
    enabled: bool = True
    key_provider: Literal["local", "env", "prefect-secret", "aws-kms"] = "local"


class PolicySpec(Strict):
    name: Slug
    organization: Slug
    description: str | None = None
    source: Source
    backup_type: BackupTypeField = BackupType.FULL
    priority: PriorityField = Priority.NORMAL
    schedule: ScheduleSpec
    peak_season: PeakSeasonSpec = Field(default_factory=PeakSeasonSpec)
    wedding_day_priority: bool = False
    vendor_type: VendorField | None = None
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    storage: Annotated[list[TargetSpec], Field(min_length=1)]
    encryption: EncryptionSpec = Field(default_factory=EncryptionSpec)
    lifecycle: list[LifecycleRule] = Field(default_factory=lambda: list(DEFAULT_LIFECYCLE))
    is_active: bool = True
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    rto_minutes: Annotated[int, Field(gt=0)] = 15
    full_every_days: Annotated[int, Field(ge=1, le=366)] = 7
    verification: VerificationSpec = Field(default_factory=VerificationSpec)

    @model_validator(mode="after")
    def _consistent(self) -> PolicySpec:
        kind = self.source.source_kind
        allowed = {
            SourceKind.POSTGRES_LOGICAL: {BackupType.FULL},
            SourceKind.POSTGRES_PHYSICAL: {BackupType.FULL, BackupType.TRANSACTION_LOG},
            SourceKind.DIRECTORY: {BackupType.FULL, BackupType.INCREMENTAL,
                                   BackupType.DIFFERENTIAL, BackupType.CONFIGURATION,
                                   BackupType.USER_DATA},
        }[kind]
        if self.backup_type not in allowed:
            raise ValueError(
                f"backup_type {self.backup_type.value} is not possible for a "
                f"{kind.value.lower()} source; use one of "
                + ", ".join(sorted(t.value for t in allowed)))
        urls = [t.url for t in self.storage]
        if len(set(urls)) != len(urls):
            raise ValueError("storage lists the same target url twice")
        previous: LifecycleRule | None = None
        for rule in sorted(self.lifecycle, key=lambda r: r.after_days):
            floor = previous.tier if previous else self.storage[0].tier
            if rule.tier.rank <= floor.rank:
                raise ValueError(
                    f"lifecycle rule after {rule.after_days} days moves to {rule.tier.value}, "
                    f"which is not colder than {floor.value}")
            previous = rule
        self.schedules()  # raises when the peak season cannot be derived
        return self

    def schedules(self) -> list[str]:
        """Every cron expression this policy runs on (off-peak and peak)."""
        peak = self.peak_season
        try:
            return effective_schedules(self.schedule.cron, peak.multiplier, peak.months,
                                       peak.schedules)
        except ScheduleError as exc:
            raise ValueError(f"peak_season: {exc}") from None

    @property
    def hold_years(self) -> int:
        return self.retention.hold_years


class PolicyFile(Strict):
    version: Literal[1] = 1
    organizations: list[OrganizationSpec] = Field(default_factory=list)
    weddings: list[WeddingSpec] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> PolicyFile:
        slugs = [o.slug for o in self.organizations]
        dup = _first_duplicate(slugs)
        if dup:
            raise ValueError(f"organization {dup!r} is declared twice")
        dup = _first_duplicate([p.name for p in self.policies])
        if dup:
            raise ValueError(f"policy name {dup!r} is used twice")
        for i, p in enumerate(self.policies):
            if p.organization not in slugs:
                raise RefError(("policies", i, "organization"),
                                f"organization {p.organization!r} is not declared under "
                                f"organizations:")
        for i, w in enumerate(self.weddings):
            if w.organization not in slugs:
                raise RefError(("weddings", i, "organization"),
                                f"organization {w.organization!r} is not declared under "
                                f"organizations:")
        return self


class RefError(ValueError):
    """A cross-reference error that knows the location it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _first_duplicate(items: list[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
