"""Data keys wrapped by key-encryption keys; key providers."""

from __future__ import annotations

import base64
import stat
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from vowvault.errors import KeyUnavailableError
from vowvault.keys import EnvKey, KeyContext, LocalKeyFile, new_dek, unwrap_with, wrap_with

CTX = KeyContext(uuid.UUID(int=1), "lumiere", uuid.UUID(int=2), 1)


def test_wrap_round_trip_and_binding() -> None:
    kek, dek = new_dek(), new_dek()
    wrapped = wrap_with(kek, dek, CTX)
    assert dek not in wrapped and len(wrapped) == 12 + 32 + 16
    assert unwrap_with(kek, wrapped, CTX) == dek
    for other in (replace(CTX, org_id=uuid.UUID(int=9)), replace(CTX, backup_id=uuid.UUID(
            int=9)), replace(CTX, version=2)):
        with pytest.raises(KeyUnavailableError, match="does not open"):
            unwrap_with(kek, wrapped, other)
    with pytest.raises(KeyUnavailableError):
        unwrap_with(new_dek(), wrapped, CTX)


def test_local_key_file_is_private_and_stable(tmp_path: Path) -> None:
    keys = LocalKeyFile(tmp_path / "keys")
    ref = keys.create(CTX.org_id, "lumiere", 1)
    assert keys.create(CTX.org_id, "lumiere", 1) == ref  # created once
    path = tmp_path / "keys" / str(CTX.org_id) / "kek-v1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    dek = new_dek()
    wrapped = keys.wrap(ref, dek, CTX)
    assert keys.unwrap(ref, wrapped, CTX) == dek
    keys.destroy(CTX.org_id, "lumiere", 1, ref)
    with pytest.raises(KeyUnavailableError, match="missing"):
        keys.unwrap(ref, wrapped, CTX)


def test_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    env = EnvKey()
    assert env.variable("grand-hall", 1) == "VOWVAULT_KEK_GRAND_HALL"
    assert env.variable("grand-hall", 3) == "VOWVAULT_KEK_GRAND_HALL_V3"
    ctx = replace(CTX, org_slug="grand-hall")
    with pytest.raises(KeyUnavailableError, match="not set"):
        env.wrap("", new_dek(), ctx)
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL", base64.b64encode(b"x" * 31).decode())
    with pytest.raises(KeyUnavailableError, match="31 bytes"):
        env.wrap("", new_dek(), ctx)
    monkeypatch.setenv("VOWVAULT_KEK_GRAND_HALL", base64.b64encode(b"k" * 32).decode())
    dek = new_dek()
    assert env.unwrap("", env.wrap("", dek, ctx), ctx) == dek
    assert env.create(ctx.org_id, "grand-hall", 1) == "env:VOWVAULT_KEK_GRAND_HALL"
