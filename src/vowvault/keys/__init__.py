"""Keys: organizations' key-encryption keys (KEKs) and backups' data keys (DEKs).

Each backup is sealed under its own random 256-bit DEK. The DEK is stored only wrapped
(AES-256-GCM) by a version of the organization's KEK; the KEK lives with a key provider
(a 0600 key file under ``$VOWVAULT_HOME/keys`` by default, or an environment variable) and
never in the catalog or the storage. Rotating a KEK re-wraps DEKs; destroying every version
of it makes the organization's backups unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import struct
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vowvault.errors import ConfigError, KeyUnavailableError

KEY_BYTES = 32


def new_dek() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _wrap_aad(org_id: uuid.UUID, backup_id: uuid.UUID, version: int) -> bytes:
    return b"vowvault-dek/1" + org_id.bytes + backup_id.bytes + struct.pack(">I", version)


def wrap_dek(kek: bytes, dek: bytes, *, org_id: uuid.UUID, backup_id: uuid.UUID,
             version: int) -> bytes:
    """nonce (12) | AES-256-GCM(kek, dek) bound to organization, backup and KEK version."""
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(kek).encrypt(nonce, dek, _wrap_aad(org_id, backup_id, version))


def unwrap_dek(kek: bytes, wrapped: bytes, *, org_id: uuid.UUID, backup_id: uuid.UUID,
               version: int) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:],
                                   _wrap_aad(org_id, backup_id, version))
    except (InvalidTag, ValueError):
        raise KeyUnavailableError(
            f"the organization's key (version {version}) does not open the data key of "
            f"backup {backup_id}: wrong key file or variable, or the key was replaced") from None


class KeyProvider(ABC):
    """Where KEK material lives. ``key_ref`` is what the catalog records: a reference,
    never the key."""

    name: str

    @abstractmethod
    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        """Make (or adopt) version ``version`` of the organization's KEK; return its ref."""

    @abstractmethod
    def load(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> bytes: ...

    @abstractmethod
    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None: ...


class LocalKeyFile(KeyProvider):
    """``$VOWVAULT_HOME/keys/<organization id>/kek-v<N>.key``: 32 random bytes, mode 0600,
    in a 0700 directory, created on first use."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, org_id: uuid.UUID, version: int) -> Path:
        return self.root / str(org_id) / f"kek-v{version}.key"

    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        path = self._path(org_id, version)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path.parent, 0o700)
            os.chmod(self.root, 0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
        return f"local:{org_id}/kek-v{version}"

    def load(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> bytes:
        path = self._path(org_id, version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyUnavailableError(
                f"key file for organization {org_slug} version {version} is missing "
                f"({path}): restore it from your key backup, or the organization's keys "
                f"were destroyed") from None
        except OSError as exc:
            raise KeyUnavailableError(f"cannot read key file {path}: {exc.strerror}") from None
        if len(data) != KEY_BYTES:
            raise KeyUnavailableError(f"key file {path} is damaged: {len(data)} bytes, "
                                      f"expected {KEY_BYTES}")
        return data

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        path = self._path(org_id, version)
        if path.exists():
            # Overwrite before unlinking: the file system may still keep old blocks, which
            # is why docs/SECURITY.md recommends encrypted disks for the key directory.
            with open(path, "r+b") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()


class EnvKey(KeyProvider):
    """``VOWVAULT_KEK_<SLUG>`` (version 1) or ``VOWVAULT_KEK_<SLUG>_V<N>``: base64 of 32
    bytes. The slug is upper-cased with dashes as underscores."""

    name = "env"

    @staticmethod
    def variable(org_slug: str, version: int) -> str:
        base = "VOWVAULT_KEK_" + re.sub(r"[^A-Z0-9]", "_", org_slug.upper())
        return base if version == 1 else f"{base}_V{version}"

    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        self.load(org_id, org_slug, version, "")
        return f"env:{self.variable(org_slug, version)}"

    def load(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> bytes:
        var = self.variable(org_slug, version)
        value = os.environ.get(var)
        if not value:
            raise KeyUnavailableError(f"environment variable {var} is not set (base64 of "
                                      f"32 random bytes: `openssl rand -base64 32`)")
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KeyUnavailableError(f"{var} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyUnavailableError(f"{var} holds {len(key)} bytes; it must hold "
                                      f"{KEY_BYTES}")
        return key

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        raise ConfigError(f"vowvault cannot destroy a key held in the environment: unset "
                          f"{self.variable(org_slug, version)} everywhere it is defined")


def provider(name: str, home: Path) -> KeyProvider:
    if name == "local":
        return LocalKeyFile(home / "keys")
    if name == "env":
        return EnvKey()
    raise ConfigError(f"key provider {name!r} is not available yet; use 'local' or 'env'")
