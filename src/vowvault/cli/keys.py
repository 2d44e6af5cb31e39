"""`vowvault keys list|rotate|destroy-retired`, `vowvault org shred`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vowvault.engine.context import Context

keys_app = typer.Typer(no_args_is_help=True, help="Organizations' key-encryption keys.")
_out = Console()


def register(app: typer.Typer, orgs_app: typer.Typer, out: Console) -> None:
    global _out
    _out = out
    app.add_typer(keys_app, name="keys")
    orgs_app.command("shred")(shred)


@keys_app.command("list")
def keys_list() -> None:
    """Key versions per organization, their age, and whether rotation is due (exit 1 if
    any active key is older than the 90-day rotation period)."""
    from vowvault.engine.keyring import key_status

    ctx = Context.from_settings()
    try:
        rows = key_status(ctx)
    finally:
        ctx.close()
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
    Safe to interrupt: run it again to finish."""
    from vowvault.engine.keyring import rotate

    ctx = Context.from_settings()
    try:
        r = rotate(ctx, org, provider)
    finally:
        ctx.close()
    _out.print(f"{org}: key v{r['version']} active; {r['rewrapped']} data keys re-wrapped in "
               f"{r['seconds']:.2f} s" + (" (resumed an interrupted rotation)"
                                           if r["resumed"] else ""))


@keys_app.command("destroy-retired")
def keys_destroy_retired(org: Annotated[str, typer.Argument(help="Organization slug.")]
                         ) -> None:
    """Destroy retired key versions that no backup uses any more."""
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
    it becomes unreadable at once."""
    from vowvault.engine.keyring import shred as do_shred

    ctx = Context.from_settings()
    try:
        r = do_shred(ctx, org, confirm)
    finally:
        ctx.close()
    _out.print(f"{org} crypto-shredded: {r['keys_destroyed']} key versions destroyed, "
               f"{r['backups']} backups unrecoverable; their objects are scheduled for "
               f"deletion")
