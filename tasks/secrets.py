"""Prefect Secret blocks as a source of vowvault's named secrets (``vowvault.secrets``)."""

from __future__ import annotations

from vowvault import secrets
from vowvault.errors import ConfigError


def prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError:
        raise ConfigError(f"no Prefect Secret block named {name!r} (create it in the UI or "
                          f"with `Secret(value=...).save({name!r})`)") from None
    return value if isinstance(value, str) else __import__("json").dumps(value)


def register() -> None:
    """Prefect Secret blocks as named secrets and as a key provider."""
    from tasks.keys import register as register_keys

    secrets.register("prefect", prefect_secret)
    register_keys()
