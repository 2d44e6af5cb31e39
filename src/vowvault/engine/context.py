"""What engine functions need, built once from settings: catalog, storage, keys, clock."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vowvault.catalog.db import Catalog
from vowvault.errors import BoundaryError
from vowvault.keys import KeyProvider, provider
from vowvault.keys.audit import load_audit_key
from vowvault.service import ServiceConfig, load_service_config
from vowvault.settings import Settings, load_settings
from vowvault.storage import StorageBackend, open_backend

log = logging.getLogger("vowvault")

Progress = Callable[[str, int, int | None], None]
"""(what, bytes done, bytes expected or None)."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _NoProgress:
    """No one watches: nothing is reported, and no totals are counted for it."""

    shows_totals = False

    def __call__(self, what: str, done: int, total: int | None) -> None:
        return None


_no_progress = _NoProgress()


@dataclass
class Context:
    settings: Settings
    catalog: Catalog
    clock: Callable[[], dt.datetime] = utcnow
    frame_size: int = 1 << 20
    """codec.frames.DEFAULT_FRAME_SIZE, not imported: the codec's libraries (zstandard,
    cryptography) load only in commands that move data."""
    workers: int = 2
    """Compression threads."""
    queue_depth: int = 4
    """Frames waiting between two stages."""
    progress: Progress = _no_progress
    heartbeat_seconds: float = 15.0
    """How often a running job renews its lease."""
    lease_seconds: float = 300.0
    """How long a lease lasts unrenewed: a job on another host whose lease ran out is taken
    for dead (``leases``)."""
    stale_after: dt.timedelta = dt.timedelta(minutes=5)
    """A job recorded before leases existed is taken for dead after this long without a
    heartbeat."""
    service: ServiceConfig | None = None
    """What organizations may point the service at (``vowvault.service``); read from the
    operator's file when the context is built."""
    _backends: dict[str, StorageBackend] = field(default_factory=dict)
    target_states: dict[str, tuple[Any, float]] = field(default_factory=dict)
    """Target URL -> (its last ``engine.targets`` check, when): remembered briefly."""

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **kw: object) -> Context:
        settings = settings or load_settings()
        service = kw.setdefault("service", load_service_config(settings.home))
        catalog = Catalog.open(settings)
        catalog.audit_key = load_audit_key(settings.home, service.audit_key)  # type: ignore[union-attr]
        return cls(settings=settings, catalog=catalog, **kw)  # type: ignore[arg-type]

    @property
    def rules(self) -> ServiceConfig:
        if self.service is None:
            self.service = load_service_config(self.settings.home)
        return self.service

    def backend(self, url: str, credentials_secret: str | None = None, *,
                org: str | None) -> StorageBackend:
        """The (cached) backend of a target, with the credentials its policy names, for
        organization ``org`` (None: the operator's own request): with a service
        configuration, the URL and the secret must be the organization's."""
        if org is not None:
            self.rules.check_storage(org, url)
            if credentials_secret:
                self.rules.check_secret(org, credentials_secret)
        elif self.rules.enforced:
            raise BoundaryError(f"storage {url} opened for no organization")
        key = f"{url}\n{credentials_secret or ''}"
        if key not in self._backends:
            self._backends[key] = open_backend(url, credentials_secret=credentials_secret)
        return self._backends[key]

    def keys(self, name: str) -> KeyProvider:
        return provider(name, self.settings.home)

    def memory_bound(self) -> int:
        """Bytes of backup data in flight at most (excluding the interpreter): frames in
        the three channels, in the compressor pool, and per-target upload queues."""
        frames = 3 * self.queue_depth + 2 * self.workers + 2 + 2 * self.queue_depth
        return frames * self.frame_size

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self.catalog.dispose()
