"""Key rotation without rewriting data (and its interruption), destroying retired versions,
crypto-shredding an organization while others are untouched."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from trees import tree_state

from vowvault.catalog.models import AuditEntry, BackupJob, BackupStorage, EncryptionKey
from vowvault.domain import BackupStatus, CopyStatus, KeyStatus
from vowvault.engine import keyring
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup
from vowvault.errors import ConfigError, KeyUnavailableError, RestoreError


def make_backups(ctx: Context, policy, tmp_path: Path, n: int, org: str = "lumiere",
                 name: str = "photos") -> tuple[Path, list[str]]:
    src = tmp_path / f"src-{org}"
    src.mkdir()
    ids = []
    policy(name, f"{{kind: directory, path: {src}}}", org=org)
    for i in range(n):
        (src / f"guests-{i}.json").write_text(f'{{"wedding": {i}}}\n' * 100)
        ids.append(run_backup(ctx, name).job_id)
    return src, ids


def data_objects(tmp_path: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "storage")
            .rglob("data") if p.is_file()}


def key_versions(ctx: Context) -> dict[int, KeyStatus]:
    with ctx.catalog.session() as s:
        return {k.version: k.status for k in s.execute(sa.select(EncryptionKey)).scalars()}


def test_rotation_rewraps_every_data_key_without_rewriting_data(ctx: Context, policy,
                                                                 tmp_path: Path) -> None:
    src, ids = make_backups(ctx, policy, tmp_path, 6)
    before = data_objects(tmp_path)
    result = keyring.rotate(ctx, "lumiere")
    assert (result["version"], result["rewrapped"], result["resumed"]) == (2, 6, False)
    assert data_objects(tmp_path) == before  # not one byte of data rewritten
    assert key_versions(ctx) == {1: KeyStatus.RETIRED, 2: KeyStatus.ACTIVE}
    with ctx.catalog.session() as s:
        v2 = s.execute(sa.select(EncryptionKey).where(EncryptionKey.version == 2)).scalar_one()
        assert {j.encryption_key_id for j in s.execute(sa.select(BackupJob)).scalars()} == {
            v2.id}
    for job_id in ids:
        assert verify_backup(ctx, job_id).intact
    restore_backup(ctx, ids[-1], to_dir=tmp_path / "out")
    assert tree_state(tmp_path / "out") == tree_state(src)
    # v1 wraps nothing any more: it can go, for good.
    assert keyring.retire_unused(ctx, "lumiere") == [1]
    assert [p.name for p in (ctx.settings.home / "keys").rglob("kek-*.key")] == ["kek-v2.key"]
    assert key_versions(ctx)[1] == KeyStatus.DESTROYED
    assert verify_backup(ctx, ids[0]).intact
    # New backups use v2.
    new = run_backup(ctx, "photos")
    with ctx.catalog.session() as s:
        assert s.get(BackupJob, uuid.UUID(new.job_id)).encryption_key_id == v2.id


def test_interrupted_rotation_resumes(ctx: Context, policy, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _src, ids = make_backups(ctx, policy, tmp_path, 5)
    real = keyring._rewrap_one
    calls = {"n": 0}

    def crash_on_third(c: Context, job_id: uuid.UUID, active_id: uuid.UUID) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("operator pressed Ctrl-C")
        real(c, job_id, active_id)

    monkeypatch.setattr(keyring, "_rewrap_one", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        keyring.rotate(ctx, "lumiere")
    monkeypatch.setattr(keyring, "_rewrap_one", real)
    for job_id in ids:  # half rotated: every backup still verifies and restores
        assert verify_backup(ctx, job_id).intact
    result = keyring.rotate(ctx, "lumiere")
    assert (result["version"], result["rewrapped"], result["resumed"]) == (2, 3, True)
    assert key_versions(ctx) == {1: KeyStatus.RETIRED, 2: KeyStatus.ACTIVE}
    for job_id in ids:
        assert verify_backup(ctx, job_id).intact


def test_crash_between_key_object_and_catalog_still_reads(ctx: Context, policy,
                                                          tmp_path: Path,
                                                          monkeypatch) -> None:
    """The key object was rewritten, the catalog was not (the process died in between)."""
    _src, ids = make_backups(ctx, policy, tmp_path, 1)
    import vowvault.engine.keyring as kr

    real_session = ctx.catalog.session

    def failing_after_storage(c: Context, job_id: uuid.UUID, active_id: uuid.UUID) -> None:
        # Run the real re-wrap but throw away its catalog transaction at the end.
        with real_session(commit=False) as s:
            monkeypatch.setattr(ctx.catalog, "session", lambda commit=True: _Same(s))
            try:
                real(c, job_id, active_id)
            finally:
                monkeypatch.setattr(ctx.catalog, "session", real_session)

    real = kr._rewrap_one
    monkeypatch.setattr(kr, "_rewrap_one", failing_after_storage)
    kr.rotate(ctx, "lumiere")
    monkeypatch.setattr(kr, "_rewrap_one", real)
    assert verify_backup(ctx, ids[0]).intact  # key object is v2, catalog says v1
    restore_backup(ctx, ids[0], to_dir=tmp_path / "out")
    assert kr.rotate(ctx, "lumiere")["resumed"]


class _Same:
    def __init__(self, session: object) -> None:
        self.session = session

    def __enter__(self) -> object:
        return self.session

    def __exit__(self, *exc: object) -> None:
        return None


def test_shredding_one_organization_leaves_the_others(ctx: Context, policy,
                                                      tmp_path: Path) -> None:
    _, ids_a = make_backups(ctx, policy, tmp_path, 2, org="lumiere", name="a-photos")
    src_b, ids_b = make_backups(ctx, policy, tmp_path, 2, org="grand-hall", name="b-db")
    with pytest.raises(ConfigError, match="--confirm lumiere"):
        keyring.shred(ctx, "lumiere", "yes")
    result = keyring.shred(ctx, "lumiere", "lumiere")
    assert result["backups"] == 2 and result["keys_destroyed"] == 1
    for job_id in ids_a:
        with pytest.raises(RestoreError, match=r"EXPIRED \(unrecoverable.*crypto-shredded"):
            restore_backup(ctx, job_id, to_dir=tmp_path / f"out-{job_id}")
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, uuid.UUID(ids_a[0]))
        assert job.status == BackupStatus.EXPIRED and "crypto-shredded" in job.error_message
        rows = s.execute(sa.select(BackupStorage).where(
            BackupStorage.backup_job_id == job.id)).scalars()
        assert {r.status for r in rows} == {CopyStatus.DELETING}
        assert s.execute(sa.select(AuditEntry).where(
            AuditEntry.action == "organization.shred")).scalar_one()
    # Even with the catalog's help the data keys no longer open: the key file is gone.
    from vowvault.keys import KeyContext

    with ctx.catalog.session() as s:
        job = s.get(BackupJob, uuid.UUID(ids_a[0]))
        key = s.get(EncryptionKey, job.encryption_key_id)
        assert key.status == KeyStatus.DESTROYED
        org = job.policy.organization
        with pytest.raises(KeyUnavailableError, match="missing"):
            ctx.keys("local").unwrap(key.key_ref, job.wrapped_dek,
                                     KeyContext(org.id, org.slug, job.id, key.version))
        assert not list((ctx.settings.home / "keys" / str(org.id)).glob("kek-*"))
    # The other organization is untouched.
    for job_id in ids_b:
        assert verify_backup(ctx, job_id).intact
    restore_backup(ctx, ids_b[-1], to_dir=tmp_path / "out-b")
    assert tree_state(tmp_path / "out-b") == tree_state(src_b)
    assert keyring.shred(ctx, "lumiere", "lumiere")["backups"] == 0  # idempotent


def test_wal_keys_open_across_a_rotation_with_one_reader(ctx: Context, policy,
                                                         tmp_path: Path) -> None:
    """A recovery opens many WAL objects with one unwrapper that reads the KEK versions
    once: a segment sealed under a version created after that read still opens (the
    versions are read again), the older one too, and a version the organization never had
    is refused."""
    import os
    from types import SimpleNamespace

    from vowvault.engine import kek
    from vowvault.engine.wal import _Unwrapper
    from vowvault.errors import IntegrityError

    make_backups(ctx, policy, tmp_path, 1)
    with ctx.catalog.read() as s:
        org_id = s.execute(sa.select(EncryptionKey.organization_id)).scalar_one()
        first = kek.KeyRecord.of(kek.active(s, org_id), "lumiere")

    def sealed(record: kek.KeyRecord) -> tuple[bytes, object]:
        dek, segment = os.urandom(32), uuid.uuid4()
        return dek, record.key_object(segment, kek.wrap(ctx, record, dek, segment))

    unwrap = _Unwrapper(ctx, SimpleNamespace(organization_id=org_id, org_slug="lumiere"))
    dek1, key1 = sealed(first)
    assert unwrap(key1) == dek1
    keyring.rotate(ctx, "lumiere")
    with ctx.catalog.read() as s:
        second = kek.KeyRecord.of(kek.active(s, org_id), "lumiere")
    assert second.version == 2
    dek2, key2 = sealed(second)
    assert unwrap(key2) == dek2 and unwrap(key1) == dek1
    stray = kek.KeyRecord(second.id, org_id, "lumiere", 7, second.provider, second.key_ref,
                          second.status, None)
    with pytest.raises(IntegrityError, match="key version 7"):
        unwrap(stray.key_object(uuid.uuid4(), b"x" * 40))
