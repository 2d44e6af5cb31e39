"""Storage targets as the service knows them: the repository marker each one holds
(``repository.marker``), checked before its backups are trusted to it or judged by it.

- A target the catalog records, holding the recorded marker: available.
- A target the catalog records whose marker is missing or another: *unavailable*. Its
  backups are neither read nor judged nor deleted there until it is back, and no new
  marker is written (an empty mount point is not a new target).
- A target the catalog has never recorded: on first use its marker is adopted if it has
  one (a catalog rebuilt, another service sharing it), else written. A target that already
  holds backups the catalog knows of (recorded before markers existed) gets its marker only
  after its objects were checked against the catalog: if the backups recorded there are
  not there, it stays unavailable and says so.

Each check reads the marker (storage, outside any transaction), then records the outcome
in a short transaction. A context remembers a result for a minute.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from vowvault.catalog.models import BackupPolicy, BackupStorage, Organization, StorageTarget
from vowvault.domain import CopyStatus, ObjectKind
from vowvault.engine.context import Context, log
from vowvault.errors import StorageError, TargetUnavailableError
from vowvault.repository.marker import Marker, read_marker, write_marker
from vowvault.storage import StorageBackend

REMEMBER = 60.0
"""Seconds a context trusts a target check."""


@dataclass(frozen=True)
class TargetState:
    url: str
    available: bool
    marker: uuid.UUID | None = None
    problem: str | None = None

    def raise_if_unavailable(self) -> None:
        if not self.available:
            raise TargetUnavailableError(self.problem or f"{self.url} is unavailable")


def check(ctx: Context, url: str, secret: str | None = None, *, org: str | None,
          first_use: bool = False) -> TargetState:
    """Is ``url`` the repository the catalog knows? ``first_use``: a target the catalog has
    never recorded gets (or adopts) its marker now (a backup is about to write to it).
    ``org``: the organization on whose behalf (its rules are checked first)."""
    backend = ctx.backend(url, secret, org=org)
    cached = ctx.target_states.get(url)
    if cached is not None and time.monotonic() - cached[1] < REMEMBER and \
            (cached[0].available or not first_use):
        return cached[0]
    state = _check(ctx, url, backend, first_use)
    ctx.target_states[url] = (state, time.monotonic())
    if not state.available:
        log.warning("%s", state.problem)
    return state


def _check(ctx: Context, url: str, backend: StorageBackend, first_use: bool) -> TargetState:
    with ctx.catalog.read() as s:
        row = s.execute(sa.select(StorageTarget).where(StorageTarget.url == url)
                        ).scalar_one_or_none()
        recorded = row.marker_id if row is not None else None
        legacy = [] if row is not None else list(s.execute(
            sa.select(BackupStorage.file_path).where(
                BackupStorage.storage_url == url,
                BackupStorage.object_kind == ObjectKind.MANIFEST,
                BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED])))
            .scalars())
    try:
        found = read_marker(backend)
    except (StorageError, OSError) as exc:
        return _record(ctx, url, recorded, False, f"{url} is unreachable: {exc}")
    if recorded is not None:
        if found is None:
            return _record(ctx, url, recorded, False,
                           f"{url} is unavailable: its repository marker is missing (not "
                           f"mounted, or emptied?); its backups are left alone until it is "
                           f"back")
        if found.repository_id != recorded:
            return _record(ctx, url, recorded, False,
                           f"{url} is unavailable: it holds repository "
                           f"{found.repository_id}, not {recorded} (another target mounted "
                           f"or configured here?)")
        return _record(ctx, url, recorded, True, None)
    if found is not None:
        log.info("%s: adopting its repository %s", url, found.repository_id)
        return _adopt(ctx, url, found.repository_id)
    if legacy:
        try:
            present = {o.name for o in backend.list("")}
        except (StorageError, OSError) as exc:
            return TargetState(url, False, None, f"{url} is unreachable: {exc}")
        missing = [name for name in legacy if name not in present]
        if missing:
            return TargetState(url, False, None,
                               f"{url} is unavailable: the catalog records {len(legacy)} "
                               f"backups there and {len(missing)} of them are not there "
                               f"(not mounted?); it gets no repository marker until they are")
        marker = Marker.new()
        write_marker(backend, marker)
        log.info("%s: its %d backups are all there; repository marker %s written", url,
                 len(legacy), marker.repository_id)
        return _adopt(ctx, url, marker.repository_id)
    if not first_use:
        return TargetState(url, False, None, f"{url} holds no vowvault repository yet")
    marker = Marker.new()
    write_marker(backend, marker)
    log.info("%s: new target, repository marker %s written", url, marker.repository_id)
    return _adopt(ctx, url, marker.repository_id)


def _adopt(ctx: Context, url: str, marker: uuid.UUID) -> TargetState:
    try:
        with ctx.catalog.session() as s:
            s.add(StorageTarget(id=uuid.uuid4(), url=url, marker_id=marker,
                                checked_at=ctx.clock(), available=True))
    except sa.exc.IntegrityError:  # another process recorded it first: compare with it
        with ctx.catalog.read() as s:
            recorded = s.execute(sa.select(StorageTarget.marker_id).where(
                StorageTarget.url == url)).scalar_one()
        if recorded != marker:
            return TargetState(url, False, recorded,
                               f"{url} is unavailable: it holds repository {marker}, not "
                               f"{recorded}")
    return TargetState(url, True, marker, None)


def _record(ctx: Context, url: str, marker: uuid.UUID | None, available: bool,
            problem: str | None) -> TargetState:
    if marker is not None:
        with ctx.catalog.session() as s:
            s.execute(sa.update(StorageTarget).where(StorageTarget.url == url).values(
                available=available, problem=problem, checked_at=ctx.clock()))
    return TargetState(url, available, marker, problem)


def check_recorded(ctx: Context) -> None:
    """Check every target the catalog records now, each on behalf of an organization whose
    policy names it, with that policy's credentials (a target no policy names any more: as
    the operator's own request)."""
    with ctx.catalog.read() as s:
        urls = list(s.execute(sa.select(StorageTarget.url).order_by(StorageTarget.url))
                    .scalars())
        named: dict[str, tuple[str, str | None]] = {}
        for storage, slug in s.execute(
                sa.select(BackupPolicy.storage_targets, Organization.slug)
                .join(Organization, Organization.id == BackupPolicy.organization_id)
                .order_by(BackupPolicy.is_active.desc(), BackupPolicy.name)):
            for t in storage:
                named.setdefault(t["url"], (slug, t.get("credentials_secret")))
    for url in urls:
        org, secret = named.get(url, (None, None))
        check(ctx, url, secret, org=org)


def targets(ctx: Context) -> list[dict[str, object]]:
    """Every target the catalog records, as last checked."""
    with ctx.catalog.read() as s:
        return [{"url": t.url, "marker": str(t.marker_id), "available": t.available,
                 "checked_at": t.checked_at, "problem": t.problem}
                for t in s.execute(sa.select(StorageTarget).order_by(StorageTarget.url))
                .scalars()]
