"""The ``key`` object of a backup: its data key wrapped by a version of the organization's
key-encryption key, and which version (docs/FORMAT.md, "Keys"). Not secret: without the
KEK it opens nothing."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass

from vowvault.errors import IntegrityError

FORMAT = 1


@dataclass(frozen=True)
class KeyObject:
    backup_id: uuid.UUID
    organization_id: uuid.UUID
    provider: str
    key_ref: str
    version: int
    wrapped_dek: bytes

    def to_bytes(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "backup_id": str(self.backup_id),
            "organization_id": str(self.organization_id),
            "kek": {"provider": self.provider, "key_ref": self.key_ref,
                    "version": self.version},
            "algorithm": "AES-256-GCM",
            "wrapped_dek": base64.b64encode(self.wrapped_dek).decode(),
        }, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, backup_id: uuid.UUID) -> KeyObject:
        try:
            doc = json.loads(raw)
            kek = doc["kek"]
            found = cls(uuid.UUID(doc["backup_id"]), uuid.UUID(doc["organization_id"]),
                        str(kek["provider"]), str(kek["key_ref"]), int(kek["version"]),
                        base64.b64decode(doc["wrapped_dek"]))
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("key object is not readable") from None
        if doc.get("format") != FORMAT:
            raise IntegrityError(f"key object has format {doc.get('format')}; this vowvault "
                                 f"reads format {FORMAT}")
        if found.backup_id != backup_id:
            raise IntegrityError(f"key object names backup {found.backup_id}, not {backup_id}")
        return found
