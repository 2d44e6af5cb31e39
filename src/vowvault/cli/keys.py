"""`vowvault keys list|rotate|export|import|destroy-retired`, `vowvault org shred`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vowvault.cli import helpstyle
from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, print_json
from vowvault.errors import ConfigError

Context = Lazy("vowvault.engine.context", "Context")

keys_app = typer.Typer(no_args_is_help=True, help="Organizations' key-encryption keys.")
_out = Console()


def register(app: typer.Typer, orgs_app: typer.Typer, out: Console) -> None:
    global _out
    _out = out
    app.add_typer(keys_app, name="keys", rich_help_panel=helpstyle.TRUST)
    orgs_app.command("shred")(shred)


@keys_app.command("list")
def keys_list(json_: Json = False) -> None:
    """Key versions per organization, their age, and whether rotation is due (exit 1 if
    any active key is older than the 90-day rotation period).

    Example: `vowvault keys list --json`
    """
    from vowvault.engine.keyring import key_status

    ctx = Context.from_settings()
    try:
        rows = key_status(ctx)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        if any(r["rotation_due"] for r in rows):
            raise typer.Exit(1)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("ORGANIZATION", "VERSION", "PROVIDER", "STATUS", "AGE (DAYS)", "ROTATION"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["organization"]), str(r["version"]), str(r["provider"]),
                      str(r["status"]), str(r["age_days"]),
                      "DUE" if r["rotation_due"] else "-")
    _out.print(table if rows else "no keys yet: they are created by the first backup")
    if any(r["rotation_due"] for r in rows):
        raise typer.Exit(1)


@keys_app.command("rotate")
def keys_rotate(
    org: Annotated[str, typer.Argument(help="Organization slug.")],
    provider: Annotated[str | None, typer.Option(help="Move to this key provider.")] = None,
) -> None:
    """New key version; every data key re-wrapped under it; old versions retired.
    Safe to interrupt: run it again to finish.

    Example: `vowvault keys rotate lumiere-photo`
    """
    from vowvault.engine.keyring import rotate

    ctx = Context.from_settings()
    try:
        r = rotate(ctx, org, provider)
    finally:
        ctx.close()
    _out.print(f"{org}: key v{r['version']} active; {r['rewrapped']} data keys re-wrapped in "
               f"{r['seconds']:.2f} s" + (" (resumed an interrupted rotation)"
                                           if r["resumed"] else ""))


def _passphrase(env: str | None, *, confirm: bool) -> str:
    import os

    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"environment variable {env} (the escrow passphrase) is not set")
        return value
    missing = ConfigError("no escrow passphrase: there is no terminal to ask for it on; give "
                          "--passphrase-env VARIABLE")
    if not _terminal():
        raise missing
    try:
        return str(typer.prompt("escrow passphrase", hide_input=True,
                                confirmation_prompt=confirm))
    except typer.Abort as exc:
        if isinstance(exc.__context__, EOFError):  # Ctrl-D
            raise missing from None
        raise  # Ctrl-C


def _terminal() -> bool:
    """Whether a hidden prompt can be given (what ``getpass`` reads from)."""
    import os
    import sys

    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        return True
    except OSError:
        return sys.stdin.isatty()


PassphraseEnv = Annotated[str | None, typer.Option(
    "--passphrase-env", help="Read the passphrase from this environment variable instead of "
                             "asking for it.")]


@keys_app.command("export")
def keys_export(org: Annotated[str, typer.Argument(help="Organization slug.")],
                out: Annotated[Path, typer.Option("--out", help="The bundle to write (must "
                                                                "not exist).")],
                passphrase_env: PassphraseEnv = None) -> None:
    """Write an escrow bundle of the organization's key versions, sealed with a
    passphrase (scrypt + AES-256-GCM). Keep it apart from the backups and the catalog.

    Example: `vowvault keys export lumiere-photo --out lumiere.escrow`
    """
    import os

    from vowvault.engine.keyring import export_keys

    passphrase = _passphrase(passphrase_env, confirm=True)
    ctx = Context.from_settings()
    try:
        bundle, versions = export_keys(ctx, org, passphrase)
    finally:
        ctx.close()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{out} exists: choose another file") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(bundle)
    _out.print(f"{org}: key versions {versions} written to {out} (mode 0600); import with "
               f"`vowvault keys import {out}`")


@keys_app.command("import")
def keys_import(bundle: Annotated[Path, typer.Argument(help="An escrow bundle.")],
                passphrase_env: PassphraseEnv = None) -> None:
    """Put an escrow bundle's key versions back into the local key store.

    Example: `vowvault keys import lumiere.escrow`
    """
    from vowvault.engine.keyring import import_keys

    try:
        data = bundle.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {bundle}: {exc.strerror}") from None
    passphrase = _passphrase(passphrase_env, confirm=False)
    ctx = Context.from_settings()
    try:
        slug, written = import_keys(ctx, data, passphrase)
    finally:
        ctx.close()
    _out.print(f"{slug}: key versions {written} imported" if written else
               f"{slug}: every key version of the bundle was already here")


@keys_app.command("destroy-retired")
def keys_destroy_retired(org: Annotated[str, typer.Argument(help="Organization slug.")]
                         ) -> None:
    """Destroy retired key versions that no backup uses any more.

    Example: `vowvault keys destroy-retired lumiere-photo`
    """
    from vowvault.engine.keyring import retire_unused

    ctx = Context.from_settings()
    try:
        versions = retire_unused(ctx, org)
    finally:
        ctx.close()
    _out.print(f"{org}: destroyed versions {versions}" if versions else
               f"{org}: no retired version is unused")


def shred(
    org: Annotated[str, typer.Argument(help="Organization slug.")],
    confirm: Annotated[str, typer.Option(help="The slug again: this cannot be undone.")] = "",
) -> None:
    """Crypto-shred an organization: destroy all its keys, so every copy of every backup of
    it becomes unreadable at once.

    Example: `vowvault orgs shred lumiere-photo --confirm lumiere-photo`
    """
    from vowvault.engine.keyring import shred as do_shred

    ctx = Context.from_settings()
    try:
        r = do_shred(ctx, org, confirm)
    finally:
        ctx.close()
    _out.print(f"{org} crypto-shredded: {r['keys_destroyed']} key versions destroyed, "
               f"{r['backups']} backups unrecoverable; their objects are scheduled for "
               f"deletion")
