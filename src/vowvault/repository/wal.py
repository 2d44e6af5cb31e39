"""Archived WAL as stored: one object per WAL file, sealed under a data key of its own
(docs/FORMAT.md, "WAL objects", format 1).

Name: ``<org>/<policy>/wal/<timeline>/<file>`` (``<timeline>`` the file name's first eight
hex digits). Bytes::

    b"VVWL" | version u8 | reserved u8 | reserved u16 | key_len u32 | key object (key_len)
            | frames (docs/FORMAT.md: header, records) of kind "wal"

The key object is a backup's (``keyobject.KeyObject``) with ``backup_id`` = the file's WAL
id, ``uuid5(WAL_NAMESPACE, "<policy id>/<timeline>/<file>")``; the frames' header carries
the same id, so every frame's authentication binds the policy, the timeline and the file
name: a segment renamed, moved to another policy or timeline, or spliced from another one
fails to open. Objects are written once and never overwritten: a file archived again must
open to the same SHA-256.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from vowvault.codec.frames import DEFAULT_FRAME_SIZE, ObjectSealer, Opener
from vowvault.errors import IntegrityError
from vowvault.repository.keyobject import KeyObject

FORMAT = 1
MAGIC = b"VVWL"
HEAD = struct.Struct(">4sBBHI")
WAL_NAMESPACE = uuid.UUID("9c1f7a52-3b7e-4f0a-8d51-6f0c2b8e4a10")
KIND = "wal"


def wal_id(policy_id: uuid.UUID, name: str) -> uuid.UUID:
    return uuid.uuid5(WAL_NAMESPACE, f"{policy_id}/{timeline_of(name)}/{name}")


def timeline_of(name: str) -> str:
    return name[:8]


def prefix(organization_id: uuid.UUID, policy_id: uuid.UUID) -> str:
    return f"{organization_id}/{policy_id}/wal/"


def object_name(organization_id: uuid.UUID, policy_id: uuid.UUID, name: str) -> str:
    return f"{prefix(organization_id, policy_id)}{timeline_of(name)}/{name}"


@dataclass(frozen=True)
class Sealed:
    blob: bytes
    sha256: str
    """Of the WAL file's bytes (what a repeated push is compared with)."""
    size: int


def seal(data: bytes, dek: bytes, key: KeyObject, level: int = 3) -> Sealed:
    """One WAL file as its object; ``key`` wraps ``dek`` and names the file's WAL id."""
    sealer = ObjectSealer(dek, key.backup_id, KIND, DEFAULT_FRAME_SIZE, level)
    frames = b"".join(sealer.records([data]))
    key_bytes = key.to_bytes()
    blob = HEAD.pack(MAGIC, FORMAT, 0, 0, len(key_bytes)) + key_bytes + frames
    return Sealed(blob, hashlib.sha256(data).hexdigest(), len(data))


def key_of(blob: bytes, expected: uuid.UUID) -> KeyObject:
    if len(blob) < HEAD.size:
        raise IntegrityError("WAL object is truncated: no header")
    magic, version, r1, r2, key_len = HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise IntegrityError("not a vowvault WAL object (bad magic)")
    if version != FORMAT or r1 or r2:
        raise IntegrityError(f"WAL object has format {version}; this vowvault reads {FORMAT}")
    if len(blob) < HEAD.size + key_len:
        raise IntegrityError("WAL object is truncated inside its key")
    return KeyObject.from_bytes(blob[HEAD.size:HEAD.size + key_len], expected)


def open_(blob: bytes, expected: uuid.UUID, unwrap: Callable[[KeyObject], bytes]) -> bytes:
    """The WAL file's bytes, every frame authenticated against ``expected`` (its WAL id)."""
    key = key_of(blob, expected)
    dek = unwrap(key)
    _, _, _, _, key_len = HEAD.unpack_from(blob)
    start = HEAD.size + key_len
    return b"".join(Opener(dek, expected, KIND).frames([blob[start:]]))
