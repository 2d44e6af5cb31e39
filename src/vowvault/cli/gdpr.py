"""`vowvault gdpr request|status|purge`: the right to be forgotten, in backups too."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vowvault.cli import helpstyle
from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, print_json

Context = Lazy("vowvault.engine.context", "Context")

gdpr_app = typer.Typer(no_args_is_help=True, help="Erasure requests (GDPR article 17).")
_out = Console()


def register(app: typer.Typer, out: Console) -> None:
    global _out
    _out = out
    app.add_typer(gdpr_app, name="gdpr", rich_help_panel=helpstyle.MAINTENANCE)


@gdpr_app.command("request")
def gdpr_request(
    org: Annotated[str, typer.Argument(help="Organization slug.")],
    subject: Annotated[str, typer.Argument(help="Opaque reference of the subject.")],
    subject_type: Annotated[str, typer.Option(help="couple, wedding, vendor or person.")]
    = "couple",
    path: Annotated[list[str] | None, typer.Option(
        "--path", help="Files of the subject: glob or directory, relative to the policy's "
                       "directory (repeat).")] = None,
    row: Annotated[list[str] | None, typer.Option(
        "--row", help="Rows of the subject: schema.table:column=value (repeat).")] = None,
) -> None:
    """Record an erasure request; every restore replays it from now on.

    Example: `vowvault gdpr request lumiere-photo client-4711 --path "wedding-2027-06-12/*"`
    """
    from vowvault.engine.erasure import request

    ctx = Context.from_settings()
    try:
        rid = request(ctx, org, subject_type, subject, paths=path or [], rows=row or [])
    finally:
        ctx.close()
    _out.print(f"erasure request {rid} recorded for {subject}; restores replay it from now on. "
               f"See `vowvault gdpr status {subject}`.")


@gdpr_app.command("status")
def gdpr_status(subject: Annotated[str, typer.Argument(help="Subject reference.")],
                json_: Json = False) -> None:
    """Backups that still hold the subject, and when each will be gone.

    Example: `vowvault gdpr status client-4711 --json`
    """
    from vowvault.engine.erasure import status

    ctx = Context.from_settings()
    try:
        rows = status(ctx, subject)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        return
    if not rows:
        _out.print(f"no backup holds {subject} any more")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("BACKUP", "POLICY", "TAKEN", "EXPIRES", "HOLDS", "WHAT HAPPENS"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["backup"][:8], r["policy"], r["taken"], r["expires"], r["holds"],
                      r["action"])
    _out.print(table)


@gdpr_app.command("purge")
def gdpr_purge(
    subject: Annotated[str, typer.Argument(help="Subject reference.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
) -> None:
    """Rewrite file-tree backups without the subject's paths, verify, delete the originals.

    Example: `vowvault gdpr purge client-4711`
    """
    from vowvault.engine.erasure import purge

    ctx = Context.from_settings()
    try:
        done = purge(ctx, subject, dry_run=dry_run)
    finally:
        ctx.close()
    for d in done:
        _out.print("  " + ", ".join(f"{k}: {v}" for k, v in d.items()))
    _out.print(f"{len(done)} backups {'to rewrite' if dry_run else 'rewritten'}")
