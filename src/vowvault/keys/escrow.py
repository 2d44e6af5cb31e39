"""Key escrow bundles: an organization's KEK versions under a passphrase.

A bundle is one JSON document: the organization, the KDF and its parameters (scrypt,
N=2^17, r=8, p=1, a random 16-byte salt), a 12-byte nonce, and the AES-256-GCM sealing of
the versions (number, reference, key bytes), with the organization's id, slug and the
bundle format as authenticated data. The passphrase never leaves the caller; a wrong one,
or a bundle changed anywhere, opens nothing.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from vowvault.errors import ConfigError

FORMAT = 1
_N, _R, _P = 2 ** 17, 8, 1
MIN_PASSPHRASE = 12


@dataclass(frozen=True)
class EscrowedKey:
    version: int
    key_ref: str
    material: bytes


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _aad(org_id: str, slug: str) -> bytes:
    return f"vowvault-key-escrow/{FORMAT}|{org_id}|{slug}".encode()


def seal(org_id: uuid.UUID, slug: str, keys: list[EscrowedKey], passphrase: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError(f"the escrow passphrase must have at least {MIN_PASSPHRASE} "
                          f"characters")
    salt, nonce = os.urandom(16), os.urandom(12)
    plain = json.dumps([{"version": k.version, "key_ref": k.key_ref,
                         "material": base64.b64encode(k.material).decode()} for k in keys])
    sealed = AESGCM(_key(passphrase, salt, _N, _R, _P)).encrypt(
        nonce, plain.encode(), _aad(str(org_id), slug))
    return json.dumps({
        "vowvault": "key-escrow", "format": FORMAT, "organization_id": str(org_id),
        "organization": slug,
        "kdf": {"name": "scrypt", "n": _N, "r": _R, "p": _P,
                "salt": base64.b64encode(salt).decode()},
        "cipher": "AES-256-GCM", "nonce": base64.b64encode(nonce).decode(),
        "sealed": base64.b64encode(sealed).decode()}, indent=1).encode() + b"\n"


def open_bundle(data: bytes, passphrase: str) -> tuple[uuid.UUID, str, list[EscrowedKey]]:
    """(organization id, slug, its key versions); ``ConfigError`` for anything wrong."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("vowvault") != "key-escrow" \
                or doc.get("format") != FORMAT:
            raise ValueError("not a vowvault key escrow bundle of format 1")
        kdf = doc["kdf"]
        # Bounds: a bundle is input, and scrypt's cost is what it says (n * r * p).
        if kdf["name"] != "scrypt" or not (2 ** 14 <= kdf["n"] <= 2 ** 20) \
                or not (1 <= kdf["r"] <= 32) or not (1 <= kdf["p"] <= 16):
            raise ValueError("unknown key derivation")
        key = _key(passphrase, base64.b64decode(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
        plain = AESGCM(key).decrypt(base64.b64decode(doc["nonce"]),
                                    base64.b64decode(doc["sealed"]),
                                    _aad(doc["organization_id"], doc["organization"]))
        keys = [EscrowedKey(int(k["version"]), str(k["key_ref"]),
                            base64.b64decode(k["material"])) for k in json.loads(plain)]
        return uuid.UUID(doc["organization_id"]), str(doc["organization"]), keys
    except InvalidTag:
        raise ConfigError("the escrow bundle does not open with this passphrase (or it was "
                          "changed)") from None
    except KeyError as exc:
        raise ConfigError(f"not a readable escrow bundle: it has no {exc} field (damaged, "
                          f"or not written by `vowvault keys export`)") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a readable escrow bundle: {exc} (damaged, or not written by "
                          f"`vowvault keys export`)") from None
