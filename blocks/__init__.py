"""Prefect Secret blocks as vowvault's plug-ins: a source of named secrets (``prefect:NAME``,
``vowvault.secrets``) and a key provider (``prefect-secret``: one block per KEK version,
named ``vowvault-kek-<organization id>-v<N>``, holding base64 of 32 random bytes).

The core never imports Prefect; the faces (the CLI, the flows) call ``register`` so that
policies may name these. Prefect itself is imported only when a secret or key is used.
"""

from __future__ import annotations

import base64
import json
import secrets as random_secrets
import uuid

from vowvault import keys, secrets
from vowvault.errors import ConfigError, KeyUnavailableError


def _name(org_id: uuid.UUID, version: int) -> str:
    return f"vowvault-kek-{org_id}-v{version}"


class PrefectSecretKey(keys.MaterialProvider):
    name = "prefect-secret"

    def create(self, org_id: uuid.UUID, org_slug: str, version: int) -> str:
        from prefect.blocks.system import Secret

        name = _name(org_id, version)
        try:
            Secret.load(name)
        except ValueError:
            Secret(value=base64.b64encode(random_secrets.token_bytes(keys.KEY_BYTES)).decode()
                   ).save(name)
        return f"prefect-secret:{name}"

    def material(self, key_ref: str, ctx: keys.KeyContext) -> bytes:
        from prefect.blocks.system import Secret

        name = _name(ctx.org_id, ctx.version)
        try:
            value = Secret.load(name).get()
        except ValueError:
            raise KeyUnavailableError(f"Prefect Secret block {name} is missing: the key was "
                                      f"destroyed, or this Prefect server is not the one "
                                      f"holding it") from None
        return base64.b64decode(str(value))

    def destroy(self, org_id: uuid.UUID, org_slug: str, version: int, key_ref: str) -> None:
        import asyncio

        from prefect.blocks.system import Secret
        from prefect.client.orchestration import get_client

        name = _name(org_id, version)
        try:
            block_id = Secret.load(name)._block_document_id
        except ValueError:
            return

        async def delete() -> None:
            async with get_client() as client:
                await client.delete_block_document(block_id)

        asyncio.run(delete())


def prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(name).get()
    except ValueError:
        raise ConfigError(f"no Prefect Secret block named {name!r} (create it in the UI or "
                          f"with `Secret(value=...).save({name!r})`)") from None
    return value if isinstance(value, str) else json.dumps(value)


def register() -> None:
    """Prefect Secret blocks as named secrets and as a key provider."""
    secrets.register("prefect", prefect_secret)
    keys.register_provider("prefect-secret", lambda home: PrefectSecretKey())
