"""The manifest: what a backup holds (docs/FORMAT.md, "Manifest"), as a typed value.

It is JSON in a framed, sealed object of its own; ``to_bytes`` writes exactly the documented
fields (sorted keys, so the catalog's SHA-256 of it is reproducible), ``from_bytes`` reads
them back and checks that the manifest belongs to the backup it was read for.
"""

from __future__ import annotations

import base64
import json
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any

import zstandard

from vowvault.codec.frames import HEADER, OBJECT_DIGEST, RECORD_LEN, SealedStats
from vowvault.errors import IntegrityError

MANIFEST_FORMAT = 2
"""The manifest format written: 2 names each object's digest (BLAKE3); 1 recorded SHA-256."""
READABLE_FORMATS = (1, 2)

_FIELDS = ("format", "backup_id", "organization_id", "policy_id", "policy", "backup_type",
           "created_at", "parent", "references", "source", "objects")


def pack_lengths(lengths: array[int]) -> str:
    return base64.b64encode(zstandard.ZstdCompressor().compress(lengths.tobytes())).decode()


def unpack_lengths(text: str) -> array[int]:
    out = array("I")
    out.frombytes(zstandard.ZstdDecompressor().decompress(base64.b64decode(text)))
    return out


DIGESTS = ("blake3", "sha256")
"""The object digests a manifest may name; format 1 knows only ``sha256``."""


@dataclass(frozen=True)
class ObjectEntry:
    """One framed object of the backup: sizes, the digest of its plaintext and its frame
    table."""

    plaintext_size: int
    digest: str
    stored_size: int
    frame_size: int
    frames: int
    frame_lengths: str
    """Base64 of zstd of the records' sealed lengths (u32, native order)."""
    algorithm: str = OBJECT_DIGEST
    """Of ``digest``: the JSON key it is stored under (``blake3``, or ``sha256``)."""

    @classmethod
    def of(cls, stats: SealedStats, frame_size: int) -> ObjectEntry:
        return cls(stats.plaintext_size, stats.digest.hexdigest(), stats.stored_size,
                   frame_size, len(stats.lengths), pack_lengths(stats.lengths))

    @classmethod
    def from_json(cls, doc: dict[str, Any], version: int = MANIFEST_FORMAT) -> ObjectEntry:
        named = [a for a in DIGESTS if a in doc] if version >= 2 else ["sha256"]
        if len(named) != 1 or named[0] not in doc:
            raise KeyError("one object digest (" + " or ".join(DIGESTS) + ")")
        return cls(int(doc["plaintext_size"]), str(doc[named[0]]), int(doc["stored_size"]),
                   int(doc["frame_size"]), int(doc["frames"]), str(doc["frame_lengths"]),
                   named[0])

    def to_json(self) -> dict[str, Any]:
        return {"plaintext_size": self.plaintext_size, self.algorithm: self.digest,
                "stored_size": self.stored_size, "frame_size": self.frame_size,
                "frames": self.frames, "frame_lengths": self.frame_lengths}

    def frame_table(self) -> tuple[array[int], array[int]]:
        """(sealed length, offset of the record) of every frame. Record *i* starts at
        ``32 + sum(4 + length_j for j < i)``."""
        lengths = unpack_lengths(self.frame_lengths)
        if len(lengths) != self.frames:
            raise IntegrityError(f"manifest lists {len(lengths)} frame lengths for "
                                 f"{self.frames} frames")
        offsets = array("Q")
        at = HEADER.size
        for length in lengths:
            offsets.append(at)
            at += RECORD_LEN.size + length
        if at != self.stored_size:
            raise IntegrityError(f"manifest's frame table adds up to {at} bytes, not the "
                                 f"{self.stored_size} stored")
        return lengths, offsets


@dataclass(frozen=True)
class Manifest:
    backup_id: uuid.UUID
    organization_id: uuid.UUID
    policy_id: uuid.UUID | None
    policy: str
    backup_type: str
    created_at: str
    parent: str | None
    references: tuple[str, ...]
    """Backups holding content this one refers to (unchanged files, later blocks)."""
    source: dict[str, Any]
    """What was backed up; ``source["kind"]`` names the source driver."""
    objects: dict[str, ObjectEntry]
    sections: dict[str, Any] = field(default_factory=dict)
    """Further top-level sections a source adds (``database`` for PostgreSQL dumps)."""
    format: int = MANIFEST_FORMAT

    @property
    def source_kind(self) -> str:
        return str(self.source.get("kind"))

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": self.format, "backup_id": str(self.backup_id),
            "organization_id": str(self.organization_id),
            "policy_id": str(self.policy_id) if self.policy_id else None,
            "policy": self.policy, "backup_type": self.backup_type,
            "created_at": self.created_at, "parent": self.parent,
            "references": sorted(self.references), "source": self.source,
            "objects": {k: v.to_json() for k, v in self.objects.items()},
            **self.sections,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, backup_id: uuid.UUID) -> Manifest:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"backup {backup_id}: manifest is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("backup_id") != str(backup_id):
            named = doc.get("backup_id") if isinstance(doc, dict) else None
            raise IntegrityError(f"manifest names backup {named}, not {backup_id}")
        version = doc.get("format")
        if version not in READABLE_FORMATS:
            raise IntegrityError(f"backup {backup_id}: manifest format {version}; this "
                                 f"vowvault reads formats "
                                 f"{', '.join(map(str, READABLE_FORMATS))}")
        try:
            return cls(
                backup_id=backup_id, organization_id=uuid.UUID(doc["organization_id"]),
                policy_id=uuid.UUID(doc["policy_id"]) if doc.get("policy_id") else None,
                policy=str(doc.get("policy") or ""), backup_type=str(doc["backup_type"]),
                created_at=str(doc["created_at"]), parent=doc.get("parent"),
                references=tuple(doc.get("references") or ()),
                source=dict(doc["source"]),
                objects={k: ObjectEntry.from_json(v, version)
                         for k, v in doc["objects"].items()},
                format=version,
                sections={k: v for k, v in doc.items() if k not in _FIELDS})
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"backup {backup_id}: manifest lacks or garbles a field "
                                 f"({exc})") from None
