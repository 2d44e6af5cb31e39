"""Whole backups on the cloud backends (emulators): round trips in the policy's tier,
copies on two clouds with the primary unreachable at restore time, archived data restored
before reading, required and optional copies failing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from cloudemu import emulator, environment
from faultproxy import Reset, Rule, Status
from trees import make_tree, tree_state

from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import CopyStatus, ObjectKind, Tier
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup
from vowvault.errors import StorageError
from vowvault.storage import open_backend


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    (src / "gallery" / "raw" / "IMG_0009.jpg").write_bytes(os.urandom(9_000_000))
    return src


@pytest.mark.parametrize("cloud", ["s3", "gcs", "azure"])
def test_round_trip_on_each_cloud_in_the_policy_tier(cloud: str, ctx: Context, policy,
                                                     tmp_path: Path, emulators,
                                                     tmp_path_factory) -> None:
    emu = emulator(cloud, emulators, tmp_path_factory)
    with environment(emu.env()):
        url = emu.new_target()
        src = source(tmp_path)
        name = policy("photos", f"{{kind: directory, path: {src}}}", targets=[url],
                      extra="lifecycle: []\n", tier="WARM")
        result = run_backup(ctx, name)
        assert result.status == "COMPLETED" and result.targets == [url]
        with ctx.catalog.session() as s:
            rows = list(s.execute(sa.select(BackupStorage)).scalars())
        data = next(r for r in rows if r.object_kind == ObjectKind.DATA)
        assert data.storage_tier == Tier.WARM and data.storage_provider == \
            {"s3": "s3", "gcs": "gcs", "azure": "azure"}[cloud]
        store = open_backend(url)
        assert store.stat(data.file_path).tier == Tier.WARM
        assert verify_backup(ctx, result.job_id).intact
        out = tmp_path / "out"
        restore_backup(ctx, result.job_id, to_dir=out)
        assert tree_state(out) == tree_state(src)


def test_copies_on_two_clouds_and_a_primary_down_at_restore(ctx: Context, policy,
                                                          tmp_path: Path, emulators,
                                                          tmp_path_factory) -> None:
    from faultproxy import FaultProxy

    s3, azure = (emulator(c, emulators, tmp_path_factory) for c in ("s3", "azure"))
    proxy = FaultProxy(s3.host, s3.port).start()
    try:
        with environment(s3.env()):
            primary = s3.new_target()
        with environment(azure.env()):
            copy = azure.new_target()
        env = {**s3.env(proxy.url), **azure.env()}
        with environment(env):
            src = source(tmp_path)
            name = policy("photos", f"{{kind: directory, path: {src}}}",
                          targets=[primary, copy])
            result = run_backup(ctx, name)
            assert result.targets == [primary, copy]
            with ctx.catalog.session() as s:
                rows = list(s.execute(sa.select(BackupStorage)).scalars())
            assert {r.storage_url for r in rows} == {primary, copy}
            assert all(r.status == CopyStatus.VERIFIED for r in rows)
            assert {r.copy_role.value for r in rows} == {"PRIMARY", "COPY"}

            proxy.add(Rule(Reset(), times=-1))  # the primary region goes dark
            out = tmp_path / "out"
            restored = restore_backup(ctx, result.job_id, to_dir=out)
            assert restored.copy_used == copy
            assert restored.skipped_copies and primary in restored.skipped_copies[0]
            assert tree_state(out) == tree_state(src)
            report = verify_backup(ctx, result.job_id)
            states = {c.url: (c.ok, c.unreachable) for c in report.copies}
            assert states == {primary: (False, True), copy: (True, False)}
    finally:
        proxy.stop()


def test_archived_data_is_restored_before_reading(ctx: Context, policy, tmp_path: Path,
                                                  emulators, tmp_path_factory) -> None:
    emu = emulator("s3", emulators, tmp_path_factory)
    with environment(emu.env()):
        url = emu.new_target()
        src = source(tmp_path)
        result = run_backup(ctx, policy("photos", f"{{kind: directory, path: {src}}}",
                                        targets=[url]))
        with ctx.catalog.session() as s:
            data = s.execute(sa.select(BackupStorage).where(
                BackupStorage.object_kind == ObjectKind.DATA)).scalar_one()
        store = open_backend(url)
        store.set_tier(data.file_path, Tier.ARCHIVE)
        assert store.stat(data.file_path).archived
        out = tmp_path / "out"
        restore_backup(ctx, result.job_id, to_dir=out, archive_wait=30)
        assert tree_state(out) == tree_state(src)


def test_required_copy_failing_fails_the_backup_optional_one_does_not(
        ctx: Context, policy, tmp_path: Path, emulators, tmp_path_factory) -> None:
    from faultproxy import FaultProxy

    emu = emulator("s3", emulators, tmp_path_factory)
    proxy = FaultProxy(emu.host, emu.port).start()
    try:
        with environment(emu.env()):
            broken = emu.new_target()
        local = f"file://{tmp_path / 'local'}"
        src = source(tmp_path)
        with environment(emu.env(proxy.url)):
            proxy.add(Rule(Status(403, b"<Error><Code>AccessDenied</Code></Error>"),
                           times=-1))
            required = policy("required", f"{{kind: directory, path: {src}}}",
                              targets=[local, broken])
            with pytest.raises(StorageError):
                run_backup(ctx, required)
            optional = policy("optional", f"{{kind: directory, path: {src}}}",
                              targets=[local, broken], optional_copies=True)
            result = run_backup(ctx, optional)
        assert result.status == "COMPLETED" and result.targets == [local]
        assert any(broken in w for w in result.warnings)
        with ctx.catalog.session() as s:
            jobs = {j.job_name.split("-")[0]: j.status.value
                    for j in s.execute(sa.select(BackupJob)).scalars()}
        assert jobs == {"required": "FAILED", "optional": "COMPLETED"}
    finally:
        proxy.stop()



def test_credentials_from_a_named_secret_are_used_and_never_kept(
        ctx: Context, policy, tmp_path: Path, emulators, tmp_path_factory,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import logging

    from faultproxy import FaultProxy

    emu = emulator("s3", emulators, tmp_path_factory)
    proxy = FaultProxy(emu.host, emu.port).start()
    key_id, secret = "AKIAVOWVAULTSECRET01", "wJalrXUtnFEMI/K7MDENG/vowvault-secret-value"
    try:
        with environment(emu.env()):
            url = emu.new_target()
        env = {k: v for k, v in emu.env(proxy.url).items()
               if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
        monkeypatch.setenv("VV_S3_CREDS", json.dumps({"access_key_id": key_id,
                                                      "secret_access_key": secret}))
        caplog.set_level(logging.DEBUG)
        with environment(env):
            src = source(tmp_path)
            name = policy("photos", f"{{kind: directory, path: {src}}}", targets=[url],
                          extra="", credentials_secret="env:VV_S3_CREDS")
            result = run_backup(ctx, name)
            restore_backup(ctx, result.job_id, to_dir=tmp_path / "out")
        # The secret's key signed the requests...
        assert any(key_id in h.get("Authorization", "") for h in proxy.headers)
        # ...and appears nowhere vowvault keeps or says anything.
        catalog_bytes = (ctx.settings.home / "catalog.db").read_bytes()
        ours = "\n".join(r.getMessage() for r in caplog.records
                         if r.name.startswith(("vowvault", "prefect")))
        for value in (key_id, secret):
            assert value.encode() not in catalog_bytes
            assert value not in ours
            assert all(value not in target for _, target, _ in proxy.log)
        # Even the SDKs' own debug logging (on here for every logger) never has the secret;
        # botocore logs the access key id, an identifier AWS does not treat as secret.
        assert secret not in caplog.text
    finally:
        proxy.stop()
