"""`vowvault backup run|list|show|verify|restore|repair|reap` (the old spellings `backups
list|show|reap` and top-level `verify`, `restore`, `repair` still work, hidden)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.filesize import pick_unit_and_suffix
from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from vowvault.cli import helpstyle, params
from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, key_value_table, print_json
from vowvault.errors import ConfigError

Context = Lazy("vowvault.engine.context", "Context")
queries = Lazy("vowvault.engine.queries")

backup_app = typer.Typer(no_args_is_help=True,
                         help="Backups: run one now, list, show, verify, restore, repair, reap.")


def register(app: typer.Typer, out: Console, err: Console) -> None:
    global _out, _err
    _out, _err = out, err
    app.add_typer(backup_app, name="backup", rich_help_panel=helpstyle.EVERYDAY)
    app.add_typer(backup_app, name="backups", hidden=True)  # the old spelling, one release
    for name, command in (("verify", verify), ("restore", restore), ("repair", repair)):
        backup_app.command(name)(command)
        app.command(name, hidden=True)(command)  # the old top-level spellings


_out = Console()
_err = Console(stderr=True)
BackupArg = Annotated[str, typer.Argument(help="Backup id, or a unique prefix of 8+ characters.",
                                          show_default=False)]


class _Speed(ProgressColumn):
    """Transfer speed in IEC units (MiB/s), as every other size vowvault prints."""

    def render(self, task: Task) -> Text:
        if not task.speed:
            return Text("", style="progress.data.speed")
        unit, suffix = pick_unit_and_suffix(int(task.speed), ["B", "KiB", "MiB", "GiB", "TiB"],
                                            1024)
        return Text(f"{task.speed / unit:.1f} {suffix}/s", style="progress.data.speed")


class ProgressBar:
    """A Rich progress bar fed by the engine's progress callback; it ends at 100 %."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(binary_units=True), _Speed(), console=_err,
                                 disable=not enabled)
        self.shows_totals = enabled
        """Not on a terminal, no bar: the engine need not count totals for it."""
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, what: str, done: int, total: int | None) -> None:
        task = self.tasks.get(what)
        if task is None:
            task = self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(task, completed=done, total=total)


@backup_app.command("run")
def backup_run(
    policy: Annotated[str, typer.Argument(help="Policy name.")],
    direct: Annotated[bool, typer.Option(
        "--direct", help="Run the engine in this process without Prefect.")] = False,
    via_deployment: Annotated[bool, typer.Option(
        "--via-deployment", help="Trigger the policy's deployment (run by `vowvault serve` "
                                 "or a worker) and wait for it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --via-deployment.",
                                           callback=params.positive_seconds)] = 3600,
) -> None:
    """Back up one policy now: snapshot, compress, encrypt, upload, verify, record.

    Example: `vowvault backup run lumiere-photos` (the Prefect flow; `--direct`: no Prefect)
    """
    if direct and via_deployment:
        raise ConfigError("--direct runs here without Prefect, --via-deployment asks a "
                          "worker: give one of them")
    if via_deployment:
        from vowvault.cli.orchestration import run_via_deployment

        _print_result(run_via_deployment(policy, timeout))
        return
    if direct:
        from vowvault.engine.backup import run_backup

        ctx = Context.from_settings()
        try:
            with ProgressBar(_err.is_terminal) as bar:
                ctx.progress = bar
                result = run_backup(ctx, policy).as_dict()
        finally:
            ctx.close()
    else:
        result = _run_flow(policy)
    _print_result(result)


def _run_flow(policy: str) -> dict[str, Any]:
    """The backup flow in this process, against the Prefect API in use, or a temporary
    server of this command's own (stopped however the command ends)."""
    import flows  # noqa: F401 - sets Prefect's offline defaults before Prefect loads
    from vowvault.cli import prefect_server

    ctx = Context.from_settings()
    try:
        retries = queries.policy_retries(ctx, policy)
    finally:
        ctx.close()
    with prefect_server.prefect_api():
        # Prefect is imported only now, with PREFECT_API_URL set: imported earlier, it
        # starts a temporary server of its own (one that outlives a killed command).
        prefect_server.run_logs_off_console()
        from flows.backup import backup
        from tasks.common import local_progress

        with ProgressBar(_err.is_terminal) as bar, local_progress(bar):
            return backup.with_options(retries=retries, retry_delay_seconds=10)(policy=policy)


def _print_result(r: dict[str, Any]) -> None:
    mib = 1024 * 1024
    ratio = r["stored_bytes"] / r["source_bytes"] if r["source_bytes"] else 0.0
    what = f"{r['files']} files" if r.get("files") is not None else \
        f"{r.get('tables') or 0} tables"
    _out.print(f"backup {r['job_id']} of {r['policy']}: {r['status']} ({r['backup_type']}, "
               f"{what}, {r['source_bytes'] / mib:.1f} MiB read, "
               f"{r['stored_bytes'] / mib:.1f} MiB stored, ratio {ratio:.3f}, "
               f"{r['duration_seconds']:.1f} s)")
    _out.print("  verified on: " + ", ".join(r["targets"]))
    for w in r.get("warnings") or []:
        _err.print(f"vowvault: warning: {w}", markup=False)
    if r.get("warnings"):
        raise typer.Exit(5)


@backup_app.command("list")
def backups_list(
    policy: Annotated[str | None, typer.Option(help="Only this policy.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.",
                                       callback=params.count)] = 50,
    json_: Json = False,
) -> None:
    """Backups with id, policy, type, status, size, time and tier.

    Example: `vowvault backup list --policy lumiere-photos --json`
    """
    ctx = Context.from_settings()
    try:
        rows = queries.list_backups(ctx, policy=policy, limit=limit)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        return
    if not rows:
        _out.print("no backups yet; run one with `vowvault backup run POLICY`")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("ID", "POLICY", "TYPE", "STATUS", "SIZE", "STORED", "TIME (UTC)", "TIER",
                "COPIES"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.id, r.policy, r.backup_type, r.status, _human(r.source_bytes),
                      _human(r.stored_bytes), f"{r.time:%Y-%m-%d %H:%M:%S}", r.tiers,
                      str(r.copies))
    _out.print(table)


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@backup_app.command("show")
def backups_show(backup: BackupArg, json_: Json = False) -> None:
    """Everything the catalog holds about one backup, every stored object included.

    Example: `vowvault backup show 3f2a9c1e`
    """
    ctx = Context.from_settings()
    try:
        d = queries.backup_details(ctx, backup)
    finally:
        ctx.close()
    if json_:  # a wrapped key or a lease token is no business of a script's
        job = {k: v for k, v in d.job.items() if k not in ("wrapped_dek", "owner_token")}
        print_json({"backup": job, "policy": d.policy, "objects": d.objects})
        return
    job = d.job

    def when(value: Any) -> str:
        return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value else "-"

    verification = job["verification_status"]
    rows: list[tuple[str, str]] = [
        ("id", str(job["id"])), ("policy", d.policy), ("status", job["status"].value),
        ("type", job["backup_type"].value), ("parent", str(job["parent_job_id"] or "-")),
        ("started", when(job["started_at"])), ("completed", when(job["completed_at"])),
        ("read / stored", f"{_human(job['source_bytes'])} / {_human(job['stored_bytes'])}"
         f" (ratio {job['compression_ratio']})"),
        ("verification", f"{verification.value if verification else '-'}"
         f" {job['verified_at']:%Y-%m-%d %H:%M:%S}" if job["verified_at"] else "-"),
        ("priority", job["priority"].value + (" (wedding day)"
                                              if job["is_wedding_day_backup"] else "")),
        ("retries", str(job["retry_count"])),
        ("stage seconds", ", ".join(f"{k} {v}" for k, v in (job["stage_durations"] or {})
                                    .items())),
        ("expires", f"{job['expires_at']:%Y-%m-%d}" if job["expires_at"] else "-"),
        ("message", job["error_message"] or "-"),
    ]
    for o in d.objects:
        checked = f" checked {o['checked_at']:%Y-%m-%d %H:%M}" if o["checked_at"] else ""
        rows.append((f"  {o['kind']}", f"{o['url']}/{o['path']} {_human(o['size'])} "
                                       f"{o['tier']} {o['status']} {o['health']}{checked}"
                                       + (f" ({o['problem']})" if o["problem"] else "")))
    _out.print(key_value_table(rows))


@backup_app.command("reap")
def backups_reap() -> None:
    """Mark backups whose process died FAILED and remove their partial objects.

    Example: `vowvault backup reap`
    """
    from vowvault.engine.reaper import reap

    ctx = Context.from_settings()
    try:
        reaped = reap(ctx)
    finally:
        ctx.close()
    _out.print(f"reaped {len(reaped)} abandoned backups" + (": " + ", ".join(reaped)
                                                             if reaped else ""))


def verify(backup: BackupArg) -> None:
    """Re-read a stored backup from every copy and prove it, whatever earlier checks found;
    exit 0 only if every copy is intact (3: a copy is damaged or missing; 1: one could not
    be reached).

    Example: `vowvault backup verify 3f2a9c1e`
    """
    from vowvault.engine.verify import VerifyFailed, VerifyIncomplete, verify_backup

    ctx = Context.from_settings()
    failure: VerifyFailed | VerifyIncomplete | None = None
    try:
        report = verify_backup(ctx, backup)
    except (VerifyFailed, VerifyIncomplete) as exc:
        report, failure = exc.report, exc
    finally:
        ctx.close()
    for c in report.copies:
        _out.print(f"  {c.url}: " + ("intact" if c.ok else f"{c.health.value}: {c.problem}"),
                   markup=False)
    if failure is not None:
        _err.print(f"vowvault: error: {failure}", markup=False)
        raise typer.Exit(failure.exit_code)
    _out.print(f"backup {report.backup_id}: intact on {sum(c.ok for c in report.copies)} of "
               f"{len(report.copies)} copies")
    if not report.intact:  # some copies could not be reached: not proven
        raise typer.Exit(1)


def repair(
    backup: BackupArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and say what would be "
                                                            "rewritten.")] = False,
) -> None:
    """Rewrite damaged or missing copies of a backup from what the intact ones hold.

    Example: `vowvault backup repair 3f2a9c1e --dry-run`
    """
    from vowvault.engine.repair import repair_backup

    ctx = Context.from_settings()
    try:
        r = repair_backup(ctx, backup, dry_run=dry_run)
    finally:
        ctx.close()
    for url in r.intact:
        _out.print(f"  {url}: intact", markup=False)
    for url in r.repaired:
        _out.print(f"  {url}: REPAIRED (rewritten from the intact copies, checked again)",
                   markup=False)
    for url, why in r.failed.items():
        _out.print(f"  {url}: {'to repair' if dry_run else 'NOT REPAIRED'}: {why}", markup=False)
    for url in r.unreachable:
        _out.print(f"  {url}: unreachable, left for later", markup=False)
    if not r.repaired and not r.failed:
        _out.print(f"backup {r.backup_id}: nothing to repair")
    else:
        _out.print(f"backup {r.backup_id}: {len(r.repaired)} copies repaired"
                   + (f", {len(r.failed)} {'to repair' if dry_run else 'not'}" if r.failed
                      else ""))
    if r.failed and not dry_run:
        raise typer.Exit(3)


def served_text(served: dict[str, dict[str, int]]) -> str:
    """Which copy served what, when several did."""
    if len(served) <= 1:
        return next(iter(served), "-")
    return "; ".join(f"{url} ({', '.join(f'{k} {n} frames' for k, n in kinds.items())})"
                     for url, kinds in served.items())


def restore(
    backup: Annotated[str | None, typer.Argument(
        help="Backup id, or a unique prefix of 8+ characters (or --policy for a "
             "point-in-time restore).", show_default=False)] = None,
    to_dir: Annotated[Path | None, typer.Option("--to-dir", help="Restore a file tree here.")]
    = None,
    to_datadir: Annotated[Path | None, typer.Option(
        "--to-datadir", help="Restore a physical backup into this empty data directory.")]
    = None,
    policy: Annotated[str | None, typer.Option(
        "--policy", help="Point-in-time restore of this physical policy (with --to-time, "
                         "--to-lsn, --to-xid or --latest).")] = None,
    to_time: Annotated[str | None, typer.Option(
        "--to-time", metavar="TIME", help="Recover to this instant (2027-06-12T14:03:00+01:00; "
                                          "UTC if no offset).")] = None,
    to_lsn: Annotated[str | None, typer.Option("--to-lsn", metavar="LSN",
                                               help="Recover to this WAL position.")] = None,
    to_xid: Annotated[str | None, typer.Option("--to-xid", metavar="XID",
                                               help="Recover to this transaction.")] = None,
    latest: Annotated[bool, typer.Option(
        "--latest", help="Recover to the newest archived WAL.")] = False,
    start: Annotated[bool, typer.Option(
        "--start", help="Start the restored cluster and wait until the target is reached.")]
    = False,
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535, help="Port of the started cluster (default: a free one).")]
    = None,
    validation_query: Annotated[str | None, typer.Option(
        "--validation-query", metavar="SQL", help="Run on the started cluster; its rows are "
                                                  "printed.")] = None,
    to_database: Annotated[str | None, typer.Option(
        "--to-database", help="Restore a database dump into this DSN (created if missing).")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty target.")]
    = False,
    password_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the target database password.")] = None,
    wait_archive: Annotated[float, typer.Option(
        "--wait-archive", metavar="SECONDS",
        help="Seconds to wait for archived data to be restored first.",
        callback=params.seconds)] = 0.0,
    emergency: Annotated[bool, typer.Option(
        "--emergency", help="Emergency recovery into production: replaces the target; needs "
                            "--role and --confirm.")] = False,
    role: Annotated[str | None, typer.Option(
        help="Your role for an emergency recovery: admin, owner or emergency_contact.")]
    = None,
    confirm: Annotated[str | None, typer.Option(
        help="The backup id again, to confirm an emergency recovery.")] = None,
    preserve_owners: Annotated[bool, typer.Option(
        "--preserve-owners", help="As root: restore files' owners and set-user/group-id "
                                  "bits (off by default).")] = False,
) -> None:
    """Stream a backup back, verifying as it goes, and validate the result; or, with
    --policy, restore a physical policy to a point in time.

    Example: `vowvault backup restore 3f2a9c1e --to-dir /tmp/restored`
    """
    import os

    from vowvault.engine.restore import restore_backup

    if policy is not None:
        _restore_to_point(policy, backup, to_datadir, to_time, to_lsn, to_xid, latest, start,
                          port, validation_query)
        return
    if backup is None:
        raise ConfigError("name the backup to restore (an id from `vowvault backup list`), or "
                          "give --policy NAME for a point-in-time restore")
    if to_datadir is not None:
        if to_dir is not None:
            raise ConfigError("give --to-dir or --to-datadir, not both")
        to_dir = to_datadir

    if emergency:
        if role is None:
            raise ConfigError("--emergency needs --role admin, owner or emergency_contact")
        if confirm != backup:
            raise ConfigError(f"an emergency recovery replaces what the target holds: "
                              f"confirm with --confirm {backup}")
    password = os.environ.get(password_env) if password_env else None
    if password_env and not password:
        raise ConfigError(f"environment variable {password_env} (the target database's "
                          f"password, --password-env) is not set")
    ctx = Context.from_settings()
    try:
        with ProgressBar(_err.is_terminal) as bar:
            ctx.progress = bar
            result = restore_backup(ctx, backup, to_dir=to_dir, to_database=to_database,
                                    force=force, password=password, archive_wait=wait_archive,
                                    emergency_role=role if emergency else None,
                                    preserve_owners=preserve_owners)
    finally:
        ctx.close()
    v = result.validation
    checked = (f"{v.get('files')} files, {v.get('checksum_per_file', 'SHA-256')} of each "
               f"checked" if "files" in v else
               f"{v.get('tables')} tables, {v.get('rows')} rows, row counts and checksums "
               f"checked" if v.get("checked") else f"not validated: {v.get('reason')}")
    for skipped in result.skipped_copies:
        _err.print(f"vowvault: warning: a copy could not serve everything, another did: "
                   f"{skipped}", markup=False)
    if emergency:
        _err.print(f"vowvault: CRITICAL: EMERGENCY recovery of backup {result.backup_id} as "
                   f"{role}: recorded in the audit log, organization webhooks escalated",
                   markup=False)
    _out.print(f"restored backup {result.backup_id} to {result.target}: "
               f"{result.bytes_restored / 1048576:.1f} MiB in {result.duration_seconds:.1f} s "
               f"from {served_text(result.served) if result.served else result.copy_used}; "
               f"{checked}", markup=False)
    for line in erasure_lines(result.erasures_applied):
        _out.print(f"  {line}", markup=False)


def erasure_lines(applied: list[dict[str, Any]]) -> list[str]:
    """What each replayed erasure request kept out of the restored data."""
    lines = []
    for a in applied:
        if "rows_deleted" in a:
            what = f"{a['rows_deleted']} rows deleted from {a['table']}"
        else:
            what = f"{a.get('files_withheld', 0)} files" + (
                f" and {a['folders_withheld']} folders" if a.get("folders_withheld") else "") + \
                " withheld"
        lines.append(f"erasure {str(a['request'])[:8]} ({a['subject']}) applied: {what}")
    return lines


def _restore_to_point(policy: str, backup: str | None, datadir: Path | None, to_time: str | None,
                      to_lsn: str | None, to_xid: str | None, latest: bool, start: bool,
                      port: int | None, validation_query: str | None) -> None:
    import datetime as dt

    from vowvault.engine import pitr

    given = [x for x in (to_time, to_lsn, to_xid) if x is not None] + (["latest"] if latest
                                                                          else [])
    if backup is not None:
        raise ConfigError("give a backup id or --policy, not both (a point-in-time restore "
                          "chooses its base backup)")
    if len(given) != 1:
        raise ConfigError("a point-in-time restore needs exactly one of --to-time, --to-lsn, "
                          "--to-xid or --latest")
    if datadir is None:
        raise ConfigError("a point-in-time restore needs --to-datadir DIR (empty or new)")
    when = None
    if to_time is not None:
        try:
            when = dt.datetime.fromisoformat(to_time.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--to-time {to_time!r}: give an instant such as "
                              f"2027-06-12T14:03:00+01:00") from None
    if (port is not None or validation_query is not None) and not start:
        raise ConfigError("--port and --validation-query need --start")
    target = pitr.Target(time=when, lsn=to_lsn, xid=to_xid, latest=latest)
    ctx = Context.from_settings()
    try:
        r = pitr.restore_to(ctx, policy, datadir.absolute(), target, start=start, port=port,
                            validation_query=validation_query)
    finally:
        ctx.close()
    _out.print(f"restored {policy} to {r.target} into {r.datadir}: base backup "
               f"{r.base_backup[:8]}, {r.wal_fetched} WAL files fetched, "
               f"{r.duration_seconds:.1f} s", markup=False)
    for line in erasure_lines(r.erasures_applied):
        _out.print(f"  {line}", markup=False)
    if r.started:
        _out.print(f"  started on port {r.port}: {r.reached}", markup=False)
        for row in r.validation.get("rows", []):
            _out.print("  " + " | ".join(str(v) for v in row), markup=False)
    elif r.erasures_applied:
        _out.print(f"  recovered ({r.reached}) and stopped again, to replay the erasures: "
                   f"start it as the server's user: pg_ctl -D {r.datadir} start", markup=False)
    else:
        _out.print(f"  start it as the server's user: pg_ctl -D {r.datadir} start (the WAL "
                   f"it needs is in {r.datadir}.wal)", markup=False)

