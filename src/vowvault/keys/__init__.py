"""Keys: organizations' key-encryption keys (KEKs) and backups' data keys (DEKs).

Each backup is sealed under its own random 256-bit DEK. The DEK is stored only wrapped by a
version of the organization's KEK. A KEK lives with a key provider and never in the catalog
or the storage; the catalog records the provider, a reference and the version.

Providers (one interface, ``KeyProvider``: create, wrap, unwrap, destroy):

- ``local``: 32 random bytes in ``$VOWVAULT_HOME/keys/<org id>/kek-v<N>.key`` (0600, in 0700
  directories), created on first use; wrapping is AES-256-GCM here.
- ``env``: ``VOWVAULT_KEK_<SLUG>`` (version 1) or ``..._V<N>``, base64 of 32 bytes.
- ``prefect-secret``: a Prefect Secret block per version (registered by the Prefect
  integration: the core does not import Prefect).
- ``aws-kms``: a KMS key per version; the KEK never leaves KMS, which wraps and unwraps the
  DEK itself, bound to organization, backup and version by the encryption context.

Every wrap is bound to (organization, backup, KEK version): a wrapped key moved to another
backup or organization does not unwrap. Destroying every version of an organization's KEK
makes all its DEKs, hence all its backups on every copy, unreadable (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from vowvault.errors import ConfigError, KeyUnavailableError
from vowvault.keys.base import (
    KEY_BYTES,
    KeyContext,
    KeyProvider,
    MaterialProvider,
    check_length,
    new_dek,
    unwrap_with,
    wrap_with,
)

__all__ = ["KEY_BYTES", "EnvKey", "KeyContext", "KeyProvider", "LocalKeyFile",
           "MaterialProvider", "new_dek", "provider", "register_provider", "unwrap_with",
           "wrap_with"]


class LocalKeyFile(MaterialProvider):
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

    def material(self, key_ref: str, ctx: KeyContext) -> bytes:
        path = self._path(ctx.org_id, ctx.version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyUnavailableError(
                f"key file for organization {ctx.org_slug} version {ctx.version} is missing "
                f"({path}): put it back with `vowvault keys import BUNDLE` (an escrow "
                f"bundle) or from your key backup, or the organization's keys were "
                f"destroyed") from None
        except OSError as exc:
            raise KeyUnavailableError(f"cannot read key file {path}: {exc.strerror}") from None
        return check_length(data, f"key file {path}")

    def adopt(self, org_id: uuid.UUID, version: int, material: bytes) -> bool:
        """Put back a key version from escrow; True if written, False if already there
        (the same bytes); a different key under that version is refused."""
        check_length(material, "the escrowed key")
        path = self._path(org_id, version)
        if path.exists():
            if path.read_bytes() != material:
                raise ConfigError(f"{path} holds a different key for version {version}: "
                                  f"not overwritten")
            return False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(material)
            f.flush()
            os.fsync(f.fileno())
        return True

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        path = self._path(org_id, version)
        if path.exists():
            # Overwrite before unlinking; the file system may still keep old blocks, which
            # is why docs/SECURITY.md asks for an encrypted disk under the key directory.
            with open(path, "r+b") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            path.unlink()


class EnvKey(MaterialProvider):
    name = "env"

    @staticmethod
    def variable(org_slug: str, version: int) -> str:
        base = "VOWVAULT_KEK_" + re.sub(r"[^A-Z0-9]", "_", org_slug.upper())
        return base if version == 1 else f"{base}_V{version}"

    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        var = self.variable(org_slug, version)
        self._load(var)
        return f"env:{var}"

    def material(self, key_ref: str, ctx: KeyContext) -> bytes:
        return self._load(self.variable(ctx.org_slug, ctx.version))

    @staticmethod
    def _load(var: str) -> bytes:
        value = os.environ.get(var)
        if not value:
            raise KeyUnavailableError(f"environment variable {var} is not set (base64 of "
                                      f"32 random bytes: `openssl rand -base64 32`)")
        try:
            key = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise KeyUnavailableError(f"{var} is not valid base64") from None
        return check_length(key, var)

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        raise ConfigError(f"vowvault cannot destroy a key held in the environment: unset "
                          f"{self.variable(org_slug, version)} everywhere it is defined")


ProviderFactory = Callable[[Path], KeyProvider]
_PROVIDERS: dict[str, ProviderFactory] = {
    "local": lambda home: LocalKeyFile(home / "keys"),
    "env": lambda home: EnvKey(),
}


def _aws_kms(home: Path) -> KeyProvider:
    from vowvault.keys.aws_kms import AwsKms

    return AwsKms()


_PROVIDERS["aws-kms"] = _aws_kms


def register_provider(name: str, factory: ProviderFactory) -> None:
    _PROVIDERS[name] = factory


def provider(name: str, home: Path) -> KeyProvider:
    factory = _PROVIDERS.get(name)
    if factory is None:
        hint = " (it needs the Prefect integration: run through the flows or the CLI)" \
            if name == "prefect-secret" else ""
        raise ConfigError(f"key provider {name!r} is not available{hint}; known: "
                          + ", ".join(sorted(_PROVIDERS)))
    return factory(home)
