"""Data keys wrapped by key-encryption keys; key providers."""

from __future__ import annotations

import base64
import stat
import uuid
from pathlib import Path

import pytest

from vowvault.errors import KeyUnavailableError
from vowvault.keys import EnvKey, LocalKeyFile, new_dek, unwrap_dek, wrap_dek

ORG, BACKUP = uuid.UUID(int=1), uuid.UUID(int=2)


def test_wrap_round_trip_and_binding() -> None:
    kek, dek = new_dek(), new_dek()
    wrapped = wrap_dek(kek, dek, org_id=ORG, backup_id=BACKUP, version=1)
    assert dek not in wrapped and len(wrapped) == 12 + 32 + 16
    assert unwrap_dek(kek, wrapped, org_id=ORG, backup_id=BACKUP, version=1) == dek
    for kw in ({"org_id": uuid.UUID(int=9)}, {"backup_id": uuid.UUID(int=9)},
               {"version": 2}):
        args = {"org_id": ORG, "backup_id": BACKUP, "version": 1, **kw}
        with pytest.raises(KeyUnavailableError, match="does not open"):
            unwrap_dek(kek, wrapped, **args)  # type: ignore[arg-type]
    with pytest.raises(KeyUnavailableError):
        unwrap_dek(new_dek(), wrapped, org_id=ORG, backup_id=BACKUP, version=1)


def test_local_key_file_is_private_and_stable(tmp_path: Path) -> None:
    keys = LocalKeyFile(tmp_path / "keys")
    ref = keys.create(ORG, "lumiere", 1)
    assert keys.create(ORG, "lumiere", 1) == ref  # created once
    path = tmp_path / "keys" / str(ORG) / "kek-v1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    kek = keys.load(ORG, "lumiere", 1, ref)
    assert len(kek) == 32 and keys.load(ORG, "lumiere", 1, ref) == kek
    assert str(kek) not in ref
    keys.destroy(ORG, "lumiere", 1, ref)
    with pytest.raises(KeyUnavailableError, match="missing"):
        keys.load(ORG, "lumiere", 1, ref)


def test_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env = EnvKey()
    assert env.variable("grand-hall", 1) == "VOWVAULT_KEK_GRAND_HALL"
    assert env.variable("grand-hall", 3) == "VOWVAULT_KEK_GRAND_HALL_V3"
    with pytest.raises(KeyUnavailableError, match="not set"):
        env.load(ORG, "grand-hall", 1, "")
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL", base64.b64encode(b"x" * 31).decode())
    with pytest.raises(KeyUnavailableError, match="31 bytes"):
        env.load(ORG, "grand-hall", 1, "")
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL", base64.b64encode(b"k" * 32).decode())
    assert env.load(ORG, "grand-hall", 1, "") == b"k" * 32
    assert env.create(ORG, "grand-hall", 1) == "env:VOWVAULT_KEK_GRAND_HALL"
