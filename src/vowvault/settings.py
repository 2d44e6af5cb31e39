"""Where vowvault keeps its state, read from the environment once per call.

``VOWVAULT_HOME`` (default ``~/.vowvault``) holds the embedded catalog (SQLite), local
key files and the default local storage. ``VOWVAULT_DATABASE_URL`` points the catalog at
PostgreSQL instead (``postgresql://user@host/db``; credentials from libpq's usual places).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from vowvault.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    actor: str
    new_catalog: bool = False
    """Start an empty embedded catalog even if the key store says one existed
    (``--new-catalog``, ``VOWVAULT_NEW_CATALOG=1``)."""

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")


def normalise_database_url(url: str) -> str:
    """Accept libpq-style URLs and pick the psycopg 3 driver for SQLAlchemy."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def default_home() -> Path:
    """``VOWVAULT_HOME``, or ``~/.vowvault``."""
    return Path(os.environ.get("VOWVAULT_HOME") or Path.home() / ".vowvault").expanduser()


def load_settings() -> Settings:
    home = default_home()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"VOWVAULT_HOME {home} is not a directory: point it at the "
                          f"directory that holds (or is to hold) the catalog and the keys")
    url = os.environ.get("VOWVAULT_DATABASE_URL") or f"sqlite:///{home / 'catalog.db'}"
    actor = os.environ.get("VOWVAULT_ACTOR") or _os_user()
    return Settings(home=home, database_url=normalise_database_url(url), actor=actor,
                    new_catalog=os.environ.get("VOWVAULT_NEW_CATALOG") == "1")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
