"""AWS KMS as the key provider, against moto's KMS: keys stay in KMS, backups and
rotations work, shredding disables the keys and every backup becomes unreadable."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from cloudemu import emulator, environment

from vowvault.catalog.models import EncryptionKey
from vowvault.engine import keyring
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.errors import RestoreError


def test_aws_kms_keys(ctx: Context, policy, tmp_path: Path, emulators,
                      tmp_path_factory) -> None:
    emu = emulator("s3", emulators, tmp_path_factory)  # moto serves KMS too
    with environment(emu.env()):
        src = tmp_path / "src"
        src.mkdir()
        (src / "guest-list.csv").write_text("Ada,1\nGrace,2\n" * 1000)
        name = policy("photos", f"{{kind: directory, path: {src}}}",
                      extra="encryption: {key_provider: aws-kms}\n")
        first = run_backup(ctx, name)
        kms = boto3.client("kms")
        with ctx.catalog.session() as s:
            (key,) = s.execute(sa.select(EncryptionKey)).scalars()
            assert key.provider == "aws-kms" and key.key_ref.startswith("arn:aws:kms:")
        assert kms.describe_key(KeyId=key.key_ref)["KeyMetadata"]["Enabled"]
        assert not (ctx.settings.home / "keys").exists()  # no key material on disk
        assert keyring.rotate(ctx, "lumiere")["rewrapped"] == 1
        restore_backup(ctx, first.job_id, to_dir=tmp_path / "out")
        assert (tmp_path / "out" / "guest-list.csv").read_text() == \
            (src / "guest-list.csv").read_text()
        keyring.shred(ctx, "lumiere", "lumiere")
        with ctx.catalog.session() as s:
            refs = [k.key_ref for k in s.execute(sa.select(EncryptionKey)).scalars()]
        assert len(refs) == 2
        for ref in refs:
            meta = kms.describe_key(KeyId=ref)["KeyMetadata"]
            assert not meta["Enabled"] and meta["KeyState"] == "PendingDeletion"
        with pytest.raises(RestoreError, match="crypto-shredded"):
            restore_backup(ctx, first.job_id, to_dir=tmp_path / "out2")
