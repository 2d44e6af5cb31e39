"""Named secrets, resolved when they are used: never stored in the catalog, never logged.

A policy names a secret (``password_secret: venue-db``, ``credentials_secret: aws-backup``);
``resolve`` turns the name into its value through a resolver chosen by an optional scheme:

- ``env:NAME``: the environment variable NAME;
- ``file:/path``: the contents of a file (e.g. a mounted Kubernetes secret);
- ``prefect:NAME`` or a bare ``NAME``: a Prefect Secret block (registered by the Prefect
  integration: the core library does not import Prefect).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from vowvault.errors import ConfigError

_RESOLVERS: dict[str, Callable[[str], str]] = {}


def register(scheme: str, resolver: Callable[[str], str]) -> None:
    _RESOLVERS[scheme] = resolver


def _env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"secret env:{name}: environment variable {name} is not set")
    return value


def _file(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"secret file:{path}: {exc.strerror}") from None


register("env", _env)
register("file", _file)


def resolve(ref: str) -> str:
    scheme, sep, name = ref.partition(":")
    if not sep or scheme not in _RESOLVERS:
        scheme, name = "prefect", ref
    resolver = _RESOLVERS.get(scheme)
    if resolver is None:
        raise ConfigError(f"secret {ref!r} names a Prefect Secret block, but Prefect is not "
                          f"available here; use env:NAME or file:/path instead")
    return resolver(name)
