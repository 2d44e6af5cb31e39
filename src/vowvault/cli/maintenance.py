"""`vowvault lifecycle`, `retention`, `orphans`: plan first (``--dry-run`` shows only the
plan), then act. Like the flows, they do not start on a Saturday or a wedding date unless
``--force``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vowvault.cli import helpstyle, params
from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, print_json
from vowvault.errors import ConfigError

Context = Lazy("vowvault.engine.context", "Context")
queries = Lazy("vowvault.engine.queries")

_out = Console()

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")]
Force = Annotated[bool, typer.Option("--force", help="Run on a wedding day too.")]
ShowAll = Annotated[bool, typer.Option("--all", help="List what stays as it is too, and why.")]


def register(app: typer.Typer, out: Console) -> None:
    global _out
    _out = out
    m = helpstyle.MAINTENANCE
    app.command("lifecycle", rich_help_panel=m)(lifecycle)
    app.command("retention", rich_help_panel=m)(retention)
    app.command("scrub", rich_help_panel=m)(scrub)
    app.command("orphans", rich_help_panel=m)(orphans)
    app.command("analytics", rich_help_panel=m)(analytics_cmd)
    app.command("report", rich_help_panel=helpstyle.EVERYDAY)(report)
    app.add_typer(webhooks_app, name="webhooks", rich_help_panel=m)
    app.add_typer(targets_app, name="targets", rich_help_panel=helpstyle.TRUST)


def _gate(ctx: Context, force: bool, dry_run: bool) -> None:
    from vowvault.engine.maintenance import gate

    allowed, why = gate(ctx, force)
    if not allowed and not dry_run:
        ctx.close()
        _out.print(f"skipped: {why}")
        raise typer.Exit(0)


def lifecycle(dry_run: DryRun = False, force: Force = False, show_all: ShowAll = False
              ) -> None:
    """Move backups' data to colder tiers as their policies' rules say.

    Example: `vowvault lifecycle --dry-run --all`
    """
    from vowvault.engine import lifecycle as engine

    ctx = Context.from_settings()
    _gate(ctx, force, dry_run)
    try:
        moves = engine.plan(ctx)
        table = Table(box=None, pad_edge=False)
        for col in ("POLICY", "OBJECT", "ACTION", "WHY"):
            table.add_column(col)
        for policy, m in moves:
            if m.move or m.to or show_all:  # moving, due but held back, or asked for
                action = f"-> {m.to.value}" if m.move and m.to else "waits" if m.to else "stay"
                table.add_row(policy, m.id[:8], action, m.reason)
        if table.row_count:
            _out.print(table)
        for policy in sorted({p for p, _ in moves}):
            mine = [m for p, m in moves if p == policy]
            moving = sum(m.move for m in mine)
            _out.print(f"{policy}: {len(mine)} data objects, {moving} to move, "
                       f"{len(mine) - moving} stay")
        if not moves:
            _out.print("no data objects")
        if not dry_run:
            done = engine.execute(ctx, moves)
            _out.print(f"moved {len(done)} objects")
    finally:
        ctx.close()


def scrub(dry_run: DryRun = False, force: Force = False,
          policy: Annotated[str | None, typer.Option(help="Only this policy.")] = None) -> None:
    """Read back today's share of stored data (every copy within its policy's scrub cycle),
    repair what is found wanting, and show coverage.

    Example: `vowvault scrub --dry-run`
    """
    from vowvault.engine import scrub as engine

    ctx = Context.from_settings()
    _gate(ctx, force, dry_run)
    try:
        result = engine.run(ctx, engine.plan(ctx, policy), dry_run=dry_run)
    finally:
        ctx.close()
    for f in result["found"]:
        _out.print(f"  {f['policy']} {f['backup'][:8]} {f['copy']}: {f['found']}"
                   + (", repaired" if f["repaired"] else f", NOT repaired: {f['problem']}"),
                   markup=False)
    verb = "would read" if dry_run else "read back"
    _out.print(f"{verb} {len(result['planned'])} copies ({result['bytes'] / 1048576:.1f} MiB)")
    for c in result["coverage"]:
        left = ", ".join(f"{t} {b / 1048576:.1f} MiB" for t, b in
                         c["not_covered_by_tier"].items())
        _out.print(f"{c['policy']}: {c['coverage_percent']}% of "
                   f"{c['stored_bytes'] / 1048576:.1f} MiB read back within "
                   f"{c['cycle_days']} days" + (f"; not covered (archived): {left}" if left
                                                 else ""), markup=False)
    if any(not f["repaired"] for f in result["found"]):
        raise typer.Exit(3)


targets_app = typer.Typer(no_args_is_help=True, help="Storage targets and their markers.")


@targets_app.command("list")
def targets_list(check: Annotated[bool, typer.Option(
        "--check", help="Read each target's marker now.")] = False, json_: Json = False) -> None:
    """Targets the catalog records, their repository marker and whether they are in sight.

    Example: `vowvault targets list --check`
    """
    from vowvault.engine import targets as engine

    ctx = Context.from_settings()
    try:
        if check:
            engine.check_recorded(ctx)
        rows = engine.targets(ctx)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("TARGET", "MARKER", "STATE", "CHECKED (UTC)"):
        table.add_column(col)
    for r in rows:
        when = r["checked_at"]
        table.add_row(str(r["url"]), str(r["marker"])[:8],
                      "available" if r["available"] else f"UNAVAILABLE: {r['problem']}",
                      f"{when:%Y-%m-%d %H:%M}" if when else "-")
    _out.print(table if rows else "no targets yet: a backup records each target it uses")


def retention(dry_run: DryRun = False, force: Force = False, show_all: ShowAll = False,
              policy: Annotated[str | None, typer.Option(help="Only this policy.")] = None
              ) -> None:
    """Delete backups no rule keeps any more (every copy), saying why for each backup.

    Example: `vowvault retention --dry-run --policy lumiere-photos`
    """
    from vowvault.engine import retention as engine

    ctx = Context.from_settings()
    _gate(ctx, force, dry_run)
    try:
        plans = engine.plan(ctx, policy)
        table = Table(box=None, pad_edge=False)
        for col in ("POLICY", "BACKUP", "COMPLETED (UTC)", "DECISION", "WHY"):
            table.add_column(col)
        for p in plans:
            for d in p.decisions:
                if d.keep and not show_all:
                    continue
                table.add_row(p.policy, d.id[:8] + (f" WAL {d.wal}" if d.wal else ""),
                              f"{d.completed_at:%Y-%m-%d %H:%M}"
                              if d.completed_at else "-", "keep" if d.keep else "DELETE",
                              "; ".join(d.reasons))
        if table.row_count:
            _out.print(table)
        for p in plans:
            gone = len(p.deletions)
            _out.print(f"{p.policy}: {len(p.decisions)} backups, keep {len(p.decisions) - gone}"
                       f", delete {gone}" + (f" (nothing is deleted while a target is "
                                             f"unavailable: {p.held})" if p.held else ""),
                       markup=False)
        if not dry_run:
            done = engine.execute(ctx, plans)
            _out.print(f"deleted {len(done)} backups")
    finally:
        ctx.close()


def orphans(remove: Annotated[bool, typer.Option("--remove", help="Delete them.")] = False
            ) -> None:
    """Objects on the targets that no catalog row accounts for.

    Example: `vowvault orphans`
    """
    from vowvault.engine.retention import sweep_orphans

    ctx = Context.from_settings()
    try:
        found = sweep_orphans(ctx, remove)
    finally:
        ctx.close()
    for o in found:
        _out.print(f"  {o['target']}/{o['object']}")
    _out.print(f"{len(found)} orphaned objects" + (" removed" if remove and found else ""))


def report(html_file: Annotated[str, typer.Option("--html", help="Write the page here.")],
           days: Annotated[int, typer.Option(help="Days of history.",
                                             callback=params.days)] = 30) -> None:
    """A self-contained HTML report: success, storage per tier with forecast, drills.

    Example: `vowvault report --html report.html`
    """
    from pathlib import Path

    from vowvault.report import build

    ctx = Context.from_settings()
    try:
        page = build(ctx, days)
    finally:
        ctx.close()
    try:
        Path(html_file).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {html_file}: {exc.strerror or exc}: give --html a "
                          f"file in a directory you can write") from None
    _out.print(f"wrote {html_file} ({len(page) // 1024} KiB, self-contained)")


def analytics_cmd(day: Annotated[str | None, typer.Option(
        help="UTC date (default: yesterday).")] = None) -> None:
    """Compute and store one day's analytics (what the daily flow does).

    Example: `vowvault analytics --day 2027-06-12`
    """
    import datetime as dt

    from vowvault.engine import analytics

    try:
        given = dt.date.fromisoformat(day) if day is not None else None
    except ValueError:
        raise ConfigError(f"--day {day!r}: give a date (2027-06-12)") from None
    ctx = Context.from_settings()
    try:
        when = given or ctx.clock().date() - dt.timedelta(days=1)
        result = analytics.run_daily(ctx, when)
    finally:
        ctx.close()
    _out.print(f"{when}: {result['rows']} policies; capacity in 90 days: "
               + ", ".join(f"{t} {v / 2**30:.2f} GiB" for t, v in
                           result["forecast_90_days"].items()))


webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook deliveries.")


@webhooks_app.command("deliver")
def webhooks_deliver() -> None:
    """Retry the deliveries that are due now (with Prefect, runs scheduled for each retry).

    Example: `vowvault webhooks deliver`
    """
    from vowvault.engine.webhooks import deliver_pending

    ctx = Context.from_settings()
    try:
        counts = deliver_pending(ctx)
    finally:
        ctx.close()
    _out.print(", ".join(f"{n} {k.lower()}" for k, n in counts.items()) or "nothing due")


@webhooks_app.command("log")
def webhooks_log(limit: Annotated[int, typer.Option(help="Newest first.",
                                                    callback=params.count)] = 20,
                 json_: Json = False) -> None:
    """Deliveries with every attempt.

    Example: `vowvault webhooks log --limit 50 --json`
    """
    ctx = Context.from_settings()
    try:
        rows = queries.webhook_log(ctx, limit)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("TIME (UTC)", "EVENT", "ENDPOINT", "STATUS", "ATTEMPTS", "LAST"):
        table.add_column(col)
    for d in rows:
        table.add_row(f"{d['created_at']:%Y-%m-%d %H:%M:%S}", d["event"]
                      + (" (escalation)" if d["escalation"] else ""), d["url"], d["status"],
                      str(d["attempts"]), d["last"])
    _out.print(table)
