"""Rewriting a damaged or missing copy of a backup from the others.

Every copy holds the same sealed bytes, so a copy is repaired by writing, object by object,
the stored records that some copy holds intact: each run of frames is read through the
failing-over reader, authenticated there, and written as it was stored (nothing is
decrypted into the repaired copy or sealed anew, but for the manifest, whose sealing is
deterministic). Each object is written atomically under its own name, the manifest last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vowvault.codec.frames import DEFAULT_FRAME_SIZE, ObjectSealer
from vowvault.domain import Tier
from vowvault.repository.copies import Copy
from vowvault.repository.layout import KEY, MANIFEST, tier_for
from vowvault.repository.reader import BackupReader, Frames


def rewrite_copy(reader: BackupReader, target: Copy, key_object: bytes,
                 tier: Callable[[str], Tier] | None = None) -> int:
    """Write every object of the backup ``reader`` reads to ``target``; bytes written.
    ``tier`` gives each object kind's tier on the target (default: the copy's data tier,
    ``layout.tier_for``)."""
    def tier_of(kind: str) -> Tier:
        return tier(kind) if tier is not None else tier_for(kind, target.tier)

    location = reader.location
    manifest = reader.manifest
    written = target.backend.save(location.name(KEY), [key_object], tier=tier_of(KEY)).size
    for kind in manifest.objects:
        frames = reader.frames(kind)

        def stored(frames: Frames = frames) -> Iterator[bytes]:
            for first, last in frames.groups():
                yield frames.raw(first, last)

        written += target.backend.save(location.name(kind), stored(), tier=tier_of(kind)).size
    sealer = ObjectSealer(reader.dek, location.backup_id, MANIFEST, DEFAULT_FRAME_SIZE)
    written += target.backend.save(location.name(MANIFEST),
                                   [b"".join(sealer.records([reader.manifest_bytes]))],
                                   tier=tier_of(MANIFEST)).size
    return written
