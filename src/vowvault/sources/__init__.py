"""Things vowvault backs up, each a ``SourceDriver`` (``base``): directory trees and
PostgreSQL databases (logical dumps) and clusters (physical base backups)."""

from __future__ import annotations

import importlib

from vowvault.domain import SourceKind
from vowvault.errors import ConfigError
from vowvault.sources.base import SourceDriver

_DRIVERS: dict[SourceKind, tuple[str, str]] = {
    SourceKind.DIRECTORY: ("vowvault.sources.directory", "DirectoryDriver"),
    SourceKind.POSTGRES_LOGICAL: ("vowvault.sources.postgres", "PostgresLogicalDriver"),
    SourceKind.POSTGRES_PHYSICAL: ("vowvault.sources.physical", "PostgresPhysicalDriver"),
}
_BY_NAME = {"directory": SourceKind.DIRECTORY, "postgres": SourceKind.POSTGRES_LOGICAL,
            "postgres-physical": SourceKind.POSTGRES_PHYSICAL}


def driver(kind: SourceKind | str) -> SourceDriver:
    """The driver of a catalog source kind, or of a manifest's ``source.kind``."""
    if not isinstance(kind, SourceKind):
        found = _BY_NAME.get(kind)
        if found is None:
            raise ConfigError(f"no source driver for {kind!r} backups in this vowvault")
        kind = found
    try:
        module, cls = _DRIVERS[kind]
    except KeyError:
        raise ConfigError(f"{kind.value.lower()} backups are not implemented") from None
    return getattr(importlib.import_module(module), cls)()  # type: ignore[no-any-return]
