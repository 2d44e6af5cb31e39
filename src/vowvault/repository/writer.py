"""Writing one backup's objects to every copy at once (and removing them).

A ``CopyWriter`` knows the backup's copies and which of them have failed. Small objects
(key, manifest) go to each live copy in turn; a streamed object (data, index) goes to
every live copy at the same time, each copy's upload in its own thread behind a bounded
channel, so the slowest copy sets the pace and memory stays bounded.

A required copy that fails fails the backup (its error is raised); an optional one is
dropped with a warning and the others go on. What each copy stored (object sizes) and why
a dropped copy failed is kept for the engine to record.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from vowvault.domain import Tier
from vowvault.errors import StorageError, VowvaultError
from vowvault.repository.channels import Abort, Aborted, Channel, Either
from vowvault.repository.copies import Copy
from vowvault.repository.layout import BackupLocation, tier_for
from vowvault.storage import StorageBackend

log = logging.getLogger("vowvault")


@dataclass
class CopyOutcome:
    """What one copy holds of the backup, or why it was dropped."""

    copy: Copy
    stored: dict[str, int] = field(default_factory=dict)
    """Object kind -> bytes stored."""
    failed: str | None = None


class CopyWriter:
    def __init__(self, location: BackupLocation, copies: list[Copy], abort: Abort,
                 queue_depth: int = 4) -> None:
        self.location = location
        self.abort = abort
        self.queue_depth = queue_depth
        self.outcomes = [CopyOutcome(c) for c in copies]
        self.warnings: list[str] = []

    def live(self) -> list[CopyOutcome]:
        return [o for o in self.outcomes if o.failed is None]

    def failed(self, outcome: CopyOutcome, exc: BaseException) -> None:
        """A copy failed: the backup fails with it if it is required."""
        outcome.failed = str(exc)
        if outcome.copy.required:
            raise exc
        self.warnings.append(f"optional copy {outcome.copy.url} failed: {exc}")
        log.warning("optional copy %s failed: %s", outcome.copy.url, exc)

    def save(self, kind: str, data: bytes) -> None:
        """A small object to every live copy."""
        for outcome in self.live():
            copy = outcome.copy
            try:
                info = copy.backend.save(self.location.name(kind), [data],
                                         tier=tier_for(kind, copy.tier))
            except VowvaultError as exc:
                self.failed(outcome, exc)
                continue
            outcome.stored[kind] = info.size

    def begin(self, kind: str) -> FanOut:
        """A streamed object to every live copy at once."""
        return FanOut(self, kind)


class FanOut:
    """The same object written to every live copy at once, each by its own thread."""

    def __init__(self, writer: CopyWriter, kind: str) -> None:
        self.writer, self.kind = writer, kind
        self.slots: list[tuple[CopyOutcome, Channel, Abort, threading.Thread,
                               dict[str, Any]]] = []
        name = writer.location.name(kind)
        for outcome in writer.live():
            own = Abort()
            channel = Channel(Either(writer.abort, own), writer.queue_depth)
            result: dict[str, Any] = {}
            tier: Tier = tier_for(kind, outcome.copy.tier)

            def write(backend: Any = outcome.copy.backend, channel: Channel = channel,
                      result: dict[str, Any] = result, own: Abort = own,
                      tier: Tier = tier) -> None:
                try:
                    result["info"] = backend.save(name, iter(channel), tier=tier)
                except BaseException as exc:
                    own.fail(exc)

            thread = threading.Thread(target=write, daemon=True,
                                      name=f"vowvault-upload-{kind}-{len(self.slots)}")
            thread.start()
            self.slots.append((outcome, channel, own, thread, result))

    def put(self, data: bytes) -> None:
        for outcome, channel, own, _t, _r in self.slots:
            if outcome.failed is not None:
                continue
            try:
                channel.put(data)
            except Aborted:
                if self.writer.abort.failed:
                    raise
                self.writer.failed(outcome, own.error or StorageError("upload stopped"))

    def finish(self) -> None:
        for outcome, channel, own, thread, result in self.slots:
            if outcome.failed is None:
                try:
                    channel.close()
                except Aborted:
                    if self.writer.abort.failed:
                        raise
            thread.join()
            if outcome.failed is not None:
                continue
            if own.error is not None:
                self.writer.failed(outcome, own.error)
                continue
            outcome.stored[self.kind] = result["info"].size


def remove_backup(backend: StorageBackend, location: BackupLocation,
                  names: list[str] | None = None) -> list[str]:
    """Delete a backup's objects from one target: whatever is found under its prefix (an
    interrupted upload's leftovers included) and those of ``names`` (the catalog's record)
    that lie under it. A name anywhere else is never deleted, whoever wrote it: the
    prefix is derived from the backup's ids. Idempotent. Returns the names refused."""
    found = [o.name for o in backend.list(location.prefix)]
    mine = [n for n in names or () if location.holds(n)]
    backend.delete(sorted({*found, *mine}))
    return sorted({n for n in names or () if not location.holds(n)})
