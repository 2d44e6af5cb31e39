"""The key-provider interface, and the wrapping every provider shares (what a wrap is bound
to: ``KeyContext``; AES-256-GCM for providers that hand out key material)."""


from __future__ import annotations

import secrets
import struct
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

from vowvault.errors import KeyUnavailableError

KEY_BYTES = 32


def new_dek() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class KeyContext:
    """What a wrap is bound to."""

    org_id: uuid.UUID
    org_slug: str
    backup_id: uuid.UUID
    version: int

    def aad(self) -> bytes:
        return b"vowvault-dek/1" + self.org_id.bytes + self.backup_id.bytes + \
            struct.pack(">I", self.version)

    def encryption_context(self) -> dict[str, str]:
        return {"vowvault:organization": str(self.org_id), "vowvault:backup":
                str(self.backup_id), "vowvault:version": str(self.version)}


def _refused(ctx: KeyContext) -> KeyUnavailableError:
    return KeyUnavailableError(
        f"the organization's key (version {ctx.version}) does not open the data key of "
        f"backup {ctx.backup_id}: wrong key file or variable, or the key was replaced")


def wrap_with(kek: bytes, dek: bytes, ctx: KeyContext) -> bytes:
    """nonce (12) | AES-256-GCM(kek, dek, aad=context)."""
    # cryptography is imported where a key is used: every command registers the key
    # providers at start (a 25 ms import for those that touch no key)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(kek).encrypt(nonce, dek, ctx.aad())


def unwrap_with(kek: bytes, wrapped: bytes, ctx: KeyContext) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], ctx.aad())
    except (InvalidTag, ValueError):
        raise _refused(ctx) from None


class KeyProvider(ABC):
    """Where KEK versions live. ``key_ref`` is what the catalog records: a reference, never
    key material."""

    name: str

    @abstractmethod
    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        """Make (or adopt) version ``version`` of the organization's KEK; return its ref."""

    @abstractmethod
    def wrap(self, key_ref: str, dek: bytes, ctx: KeyContext) -> bytes: ...

    @abstractmethod
    def unwrap(self, key_ref: str, wrapped: bytes, ctx: KeyContext) -> bytes:
        """The DEK; ``KeyUnavailableError`` when the KEK is gone or does not open it."""

    @abstractmethod
    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        """Make this KEK version unusable for ever (idempotent)."""


class MaterialProvider(KeyProvider):
    """Providers that hand vowvault the key bytes; wrapping is AES-256-GCM here."""

    @abstractmethod
    def material(self, key_ref: str, ctx: KeyContext) -> bytes: ...

    def wrap(self, key_ref: str, dek: bytes, ctx: KeyContext) -> bytes:
        return wrap_with(self.material(key_ref, ctx), dek, ctx)

    def unwrap(self, key_ref: str, wrapped: bytes, ctx: KeyContext) -> bytes:
        return unwrap_with(self.material(key_ref, ctx), wrapped, ctx)


def check_length(data: bytes, where: str) -> bytes:
    if len(data) != KEY_BYTES:
        raise KeyUnavailableError(f"{where} holds {len(data)} bytes; a key has {KEY_BYTES}")
    return data
