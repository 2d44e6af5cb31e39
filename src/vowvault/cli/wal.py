"""`vowvault wal push|fetch|archiver|status|install-command`: continuous WAL archiving of
physical policies. ``push`` and ``fetch`` are answered by ``vowvault.cli.entry`` before
anything heavy is imported; the commands here give them their help and run them the same
way when reached through Typer."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, print_json

Context = Lazy("vowvault.engine.context", "Context")

wal_app = typer.Typer(no_args_is_help=True,
                      help="Continuous WAL archiving of physical PostgreSQL policies.")
_out = Console()

Policy = Annotated[str, typer.Option("--policy", help="The physical policy.",
                                     show_default=False)]
Spool = Annotated[str | None, typer.Option(
    "--spool", help="The spool directory (default $VOWVAULT_WAL_SPOOL, else "
                    "$VOWVAULT_HOME/wal-spool).")]


def register(app: typer.Typer, out: Console) -> None:
    global _out
    _out = out
    from vowvault.cli import helpstyle

    app.add_typer(wal_app, name="wal", rich_help_panel=helpstyle.EVERYDAY)


@wal_app.command("push")
def wal_push(path: Annotated[str, typer.Argument(help="The WAL file (%p).",
                                                 show_default=False)],
             policy: Policy, spool: Spool = None) -> None:
    """Hand one WAL file to the local spool (what `archive_command` runs: no catalog, no
    keys, milliseconds).

    Example: `vowvault wal push --policy grand-hall-cluster pg_wal/000000010000000000000003`
    """
    from vowvault import walspool

    raise typer.Exit(walspool.main(["push", "--policy", policy, *(
        ["--spool", spool] if spool else []), path]))


@wal_app.command("fetch")
def wal_fetch(name: Annotated[str, typer.Argument(help="The WAL file's name (%f).",
                                                  show_default=False)],
              destination: Annotated[str, typer.Argument(help="Where to write it (%p).",
                                                         show_default=False)],
              policy: Policy,
              source: Annotated[str, typer.Option("--from", help="The directory a restore "
                                                  "prefetched the WAL into.")]) -> None:
    """Copy one WAL file from a prefetch directory (what `restore_command` runs); exit 1
    when it is not there.

    Example: `vowvault wal fetch --policy venue --from /srv/pg.wal 00000001000000000000000A x`
    """
    from vowvault import walspool

    raise typer.Exit(walspool.main(["fetch", "--policy", policy, "--from", source, name,
                                    destination]))


@wal_app.command("archiver")
def wal_archiver(policy: Policy, spool: Spool = None,
                 once: Annotated[bool, typer.Option(
                     "--once", help="Drain the spool once and exit.")] = False,
                 interval: Annotated[float, typer.Option(
                     metavar="SECONDS", help="How often to look at the spool.")] = 1.0,
                 workers: Annotated[int, typer.Option(
                     min=1, max=32, help="Files sealed and uploaded at once.")] = 4) -> None:
    """Seal, upload to every copy and record what the spool holds (long-running; the
    service user, with the keys and the catalog). SIGTERM or Ctrl-C stops after the pass in
    progress.

    Example: `vowvault wal archiver --policy grand-hall-cluster --spool /var/spool/vowvault`
    """
    from vowvault.engine import wal

    stopping: list[int] = []
    if not once:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stopping.append(signum))
    ctx = Context.from_settings()
    checked = 0.0
    try:
        while True:
            report = wal.archive(ctx, policy, spool, workers=workers)
            if once or time.monotonic() - checked >= 60:  # the backlog alerts, each minute
                checked = time.monotonic()
                for line in wal.health(ctx, policy, spool).alerts:
                    _out.print(f"ALERT {line}", markup=False)
            for line in report.conflicts:
                _out.print(f"CONFLICT {line}", markup=False)
            for name, why in report.failed.items():
                _out.print(f"not archived yet {name}: {why}", markup=False)
            if report.archived or report.already or once:
                _out.print(f"archived {len(report.archived)} WAL files"
                           + (f" ({len(report.already)} already there)" if report.already
                              else "")
                           + f", {report.bytes / 1048576:.1f} MiB read, "
                             f"{report.stored / 1048576:.1f} MiB stored", markup=False)
            if once or stopping:
                break
            time.sleep(interval)
    finally:
        ctx.close()
    if report.conflicts or report.failed:
        raise typer.Exit(1)


@wal_app.command("status")
def wal_status(policy: Annotated[str, typer.Argument(help="The physical policy.",
                                                     show_default=False)],
               spool: Spool = None, json_: Json = False) -> None:
    """The recoverable window (earliest and latest restorable instant), the archive's lag,
    the spool and any gap.

    Example: `vowvault wal status grand-hall-cluster --json`
    """
    from vowvault.engine import wal

    ctx = Context.from_settings()
    try:
        w = wal.window(ctx, policy, spool)
        h = wal.health(ctx, policy, spool)
    finally:
        ctx.close()
    if json_:
        print_json({**w.__dict__, "health": h})
        return
    when = (lambda d: f"{d:%Y-%m-%d %H:%M:%S} UTC" if d else "-")  # noqa: E731
    _out.print(f"{policy}: restorable from {when(w.earliest)} to {when(w.latest)}"
               + (f"; newest WAL archived {w.lag_seconds:.0f} s ago" if w.lag_seconds
                  is not None else "; no WAL archived yet")
               + f"; {w.spooled} files waiting in the spool", markup=False)
    table = Table(box=None, pad_edge=False)
    for col in ("BASE BACKUP", "ENDED (UTC)", "RESTORABLE UNTIL (UTC)", "START LSN",
                "STOP LSN", "TIMELINE"):
        table.add_column(col)
    for b in w.bases:
        table.add_row(b["id"][:8], f"{b['completed_at']:%Y-%m-%d %H:%M:%S}",
                      f"{b['restorable_until']:%Y-%m-%d %H:%M:%S}", str(b.get("start_lsn")),
                      str(b.get("stop_lsn")), str(b.get("timeline")))
    _out.print(table)
    for tli, runs in w.timelines.items():
        _out.print(f"  timeline {int(tli, 16)}: " + ", ".join(f"{a[8:]}..{b[8:]}"
                                                            for a, b in runs), markup=False)
    for gap in w.gaps:
        _out.print(f"  GAP {gap}", markup=False)
    _out.print(f"  spool: {h.spool_files} files, {h.spool_bytes / 2**20:.1f} MiB (alert above "
               f"{h.spool_alert_bytes >> 20} MiB)"
               + (f", oldest waiting {h.oldest_waiting_seconds:.0f} s" if
                  h.oldest_waiting_seconds is not None else "")
               + "; pg_wal: " + (f"{h.pg_wal_bytes / 2**20:.0f} MiB (alert above "
                                 f"{h.pg_wal_alert_bytes >> 20} MiB)" if h.pg_wal_bytes
                                 is not None else f"unknown ({h.pg_wal_problem})"),
               markup=False)
    for line in h.alerts:
        _out.print(f"  ALERT {line}", markup=False)


@wal_app.command("verify")
def wal_verify(policy: Annotated[str, typer.Argument(help="The physical policy.",
                                                     show_default=False)],
               skip_proven: Annotated[int | None, typer.Option(
                   "--skip-proven", metavar="DAYS", min=1,
                   help="Do not read again the files of archiver passes proven intact "
                        "within DAYS (the scrub flow uses 7); names are still checked.")]
               = None,
               json_: Json = False) -> None:
    """Read every archived WAL file the kept base backups need and check it is there and
    intact, with each timeline's history file; a gap is reported with its LSN range,
    shrinks the window and raises an alert. Exit 1 on a gap.

    Example: `vowvault wal verify grand-hall-cluster`
    """
    from vowvault.engine import wal

    ctx = Context.from_settings()
    try:
        check = wal.verify_wal(ctx, policy, fresh_days=skip_proven)
    finally:
        ctx.close()
    if json_:
        print_json(check)
    else:
        _out.print(f"{policy}: {check.checked} WAL files read ({check.bytes / (1 << 20):.1f} "
                   f"MiB" + (f"; {check.skipped} proven within {skip_proven} days, not read "
                             f"again" if skip_proven else "")
                   + "): " + ("continuous" if check.ok else "NOT continuous"), markup=False)
        for gap in check.gaps:
            _out.print(f"  GAP {gap}", markup=False)
        for name, problems in sorted(check.damaged_copies.items()):
            _out.print(f"  {name}: intact on another copy, but {'; '.join(problems)}",
                       markup=False)
    if not check.ok:
        raise typer.Exit(1)


@wal_app.command("install-command")
def wal_install(directory: Annotated[Path, typer.Argument(
        help="Where the database server's user can run it.", show_default=False)],
                policy: Policy, spool: Spool = None) -> None:
    """Put `vowvault-wal` (standard library only, run by the system's python3) where the
    postgres user can run it, and print the `archive_command` that uses it.

    Example: `vowvault wal install-command /usr/local/lib/vowvault --policy grand-hall-cluster`
    """
    import shutil

    from vowvault import walspool

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "vowvault-wal"
    shutil.copyfile(walspool.__file__, target)
    target.chmod(0o755)
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin") or "python3"
    where = f" --spool {spool}" if spool else " --spool /var/spool/vowvault"
    _out.print(f"installed {target}; in postgresql.conf (the spool writable by the server's "
               f"user, readable by the archiver's):", markup=False)
    _out.print("  archive_mode = on", markup=False)
    _out.print(f"  archive_command = '{python} {target} push --policy {policy}{where} %p'",
               markup=False)
