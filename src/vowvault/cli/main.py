"""The ``vowvault`` command line: parse, call the core, show the result.

Errors the user can act on are printed as one line on stderr, with an exit code from
``vowvault.errors`` (2 for bad input); nothing here holds business logic.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from vowvault import __version__
from vowvault.cli import helpstyle, params
from vowvault.cli.lazy import Lazy
from vowvault.cli.tables import Json, key_value_table, print_json
from vowvault.errors import ConfigError, Terminated, VowvaultError
from vowvault.settings import load_settings

Context = Lazy("vowvault.engine.context", "Context")
queries = Lazy("vowvault.engine.queries")
zone = Lazy("vowvault.scheduling", "zone")
current_revision = Lazy("vowvault.catalog.db", "current_revision")
head_revision = Lazy("vowvault.catalog.db", "head_revision")
make_engine = Lazy("vowvault.catalog.db", "make_engine")
upgrade = Lazy("vowvault.catalog.db", "upgrade")

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode="markdown",
                  help="Policy-driven, encrypted, verified backups, orchestrated by Prefect.")
catalog_app = typer.Typer(no_args_is_help=True,
                          help="The catalog: its schema, migrations, and rebuilding a lost one.")
policies_app = typer.Typer(no_args_is_help=True, help="Backup policies declared in YAML.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
orgs_app = typer.Typer(no_args_is_help=True, help="Organizations (tenants).")
app.add_typer(catalog_app, name="catalog", rich_help_panel=helpstyle.SETUP)
app.add_typer(catalog_app, name="db", hidden=True)  # the old spelling, kept one release
app.add_typer(policies_app, name="policies", rich_help_panel=helpstyle.EVERYDAY)
app.add_typer(policies_app, name="policy", hidden=True)
app.add_typer(audit_app, name="audit", rich_help_panel=helpstyle.TRUST)
app.add_typer(orgs_app, name="orgs", rich_help_panel=helpstyle.TRUST)
app.add_typer(orgs_app, name="org", hidden=True)

ALIASES = {"backups": "backup", "db": "catalog", "verify": "backup verify",
           "restore": "backup restore", "repair": "backup repair"}
"""Old spellings that still work for one release, and what they are now."""


def _console_settings() -> tuple[dict[str, Any], dict[str, Any]]:
    """Wide when piped (tests, logs), the terminal's width otherwise."""
    return ({"highlight": False, "soft_wrap": True,
             "width": None if sys.stdout.isatty() else 200},
            {"stderr": True, "highlight": False, "soft_wrap": True})


out = Console(**_console_settings()[0])
err = Console(**_console_settings()[1])


def fresh_consoles() -> None:
    """Look at the terminal again: a command forked from a warm process (vowvault.warm)
    has other standard streams than the process that imported this module. Every command
    module holds these two objects, so they are made again in place."""
    out_kw, err_kw = _console_settings()
    out.__init__(**out_kw)  # type: ignore[misc]
    err.__init__(**err_kw)  # type: ignore[misc]

from vowvault.cli import backups as _backups  # noqa: E402 - needs out/err above

_backups.register(app, out, err)
from vowvault.cli import orchestration as _orchestration  # noqa: E402

_orchestration.register(app, out, err)
from vowvault.cli import keys as _keys  # noqa: E402

_keys.register(app, orgs_app, out)
from vowvault.cli import maintenance as _maintenance  # noqa: E402

_maintenance.register(app, out)
from vowvault.cli import gdpr as _gdpr  # noqa: E402

_gdpr.register(app, out)
from vowvault.cli import templates as _templates  # noqa: E402

_templates.register(policies_app, out, err)
from vowvault.cli import wal as _wal  # noqa: E402

_wal.register(app, out)

FileArg = Annotated[Path, typer.Argument(help="Policy file (YAML).", show_default=False)]


def _version(value: bool) -> None:
    if value:
        out.print(f"vowvault {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Show the version.")]
          = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                                help="Log what the engine does.")] = False,
          new_catalog: Annotated[bool, typer.Option(
              "--new-catalog", help="Start a new, empty embedded catalog although the key "
                                    "store says there was one.")] = False,
          ) -> None:
    """vowvault keeps wedding data safe: see `vowvault COMMAND --help`."""
    if new_catalog:
        os.environ["VOWVAULT_NEW_CATALOG"] = "1"
    if verbose:
        _VERBOSE.append(True)
        os.environ["VOWVAULT_VERBOSE"] = "1"  # Prefect's run logs on the console too
    logger = logging.getLogger("vowvault")
    if verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        # Errors reach the user once, as the command's one-line message; warnings that
        # matter are printed by the command itself.
        logger.addHandler(logging.NullHandler())


@catalog_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the catalog to this version's schema.

    Example: `VOWVAULT_DATABASE_URL=postgresql://vowvault@db/vowvault vowvault catalog upgrade`
    """
    settings = load_settings()
    engine = make_engine(settings.database_url)
    before = current_revision(engine)
    upgrade(engine, actor=settings.actor)
    after = current_revision(engine)
    where = engine.url.render_as_string(hide_password=True)
    engine.dispose()
    if before == after:
        out.print(f"catalog {where} already at revision {after}")
    else:
        out.print(f"catalog {where} migrated from {before or 'empty'} to {after}")


@catalog_app.command("current")
def db_current() -> None:
    """Show the catalog's schema revision and the one this vowvault needs.

    Example: `vowvault catalog current`
    """
    settings = load_settings()
    engine = make_engine(settings.database_url)
    rev = current_revision(engine)
    engine.dispose()
    out.print(f"catalog revision: {rev or 'none (run `vowvault catalog upgrade`)'}; "
              f"needed: {head_revision()}")


@catalog_app.command("schema")
def db_schema() -> None:
    """Print the PostgreSQL DDL of the catalog (what `catalog upgrade` builds; = schema.sql).

    Example: `vowvault catalog schema | less`
    """
    from vowvault.catalog.db import postgres_ddl

    sys.stdout.write(postgres_ddl())


@policies_app.command("validate")
def policies_validate(file: FileArg) -> None:
    """Check a policy file without touching the catalog.

    Example: `vowvault policies validate examples/policies.yaml`
    """
    from vowvault.policies.loader import load_policy_file

    parsed = load_policy_file(file)
    out.print(f"{file}: {len(parsed.organizations)} organizations, "
              f"{len(parsed.policies)} policies, {len(parsed.weddings)} weddings: valid")


@policies_app.command("apply")
def policies_apply(file: FileArg,
                   dry_run: Annotated[bool, typer.Option("--dry-run",
                                                         help="Show the plan only.")] = False,
                   ) -> None:
    """Make the catalog match the file (idempotent); removed policies are deactivated.

    Example: `vowvault policies apply examples/policies.yaml --dry-run`
    """
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import load_policy_file
    from vowvault.service import check_policy_file

    parsed = load_policy_file(file)
    ctx = Context.from_settings()
    try:
        check_policy_file(ctx.rules, parsed)
        changes = apply_policy_file(ctx.catalog, parsed, actor=ctx.settings.actor,
                                    dry_run=dry_run)
    finally:
        ctx.close()
    changed = [c for c in changes if c.action != "unchanged"]
    for change in changes:
        style = "dim" if change.action == "unchanged" else None
        out.print(("  would " if dry_run else "  ") + change.describe(), style=style)
    verb = "would change" if dry_run else "changed"
    out.print(f"{file}: {len(changed)} {verb}, {len(changes) - len(changed)} unchanged")


AtOpt = Annotated[str | None, typer.Option(
    "--at", metavar="DATE", help="Look from this day (2027-06-12) or instant "
                                 "(2027-06-12T14:00+01:00) instead of now.")]


def _parse_at(value: str | None) -> dt.date | dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else \
            dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--at {value!r}: give a day (2027-06-12) or an instant "
                          f"(2027-06-12T14:00+01:00)") from None


@policies_app.command("list")
def policies_list(all_: Annotated[bool, typer.Option("--all", help="Include inactive.")]
                  = False, at: AtOpt = None, json_: Json = False) -> None:
    """Policies with their schedule, next run and that run's priority, with the reason
    (a wedding day raises it).

    Example: `vowvault policies list --at 2027-06-12`
    """
    now = dt.datetime.now(dt.UTC)
    when_at = _parse_at(at)
    ctx = Context.from_settings()
    try:
        policies = queries.list_policies(ctx, include_inactive=all_, now=now, at=when_at)
    finally:
        ctx.close()
    if json_:
        print_json(policies)
        return
    if not policies:
        out.print("no policies; apply a file with `vowvault policies apply FILE`")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "ORGANIZATION", "SOURCE", "TYPE", "SCHEDULE", "NEXT RUN",
                "PRIORITY", "TARGETS", "ACTIVE"):
        table.add_column(col)
    for p in policies:
        if p.next_run:
            when = f"{p.next_run.astimezone(zone(p.timezone)):%Y-%m-%d %H:%M %Z}" + \
                   (f" (in {_ago(p.next_run - now)})" if p.next_run > now else "")
            prio = p.priority.value if p.priority == p.base_priority else \
                f"{p.priority.value} (wedding day; base {p.base_priority.value})"
        else:
            when, prio = "-", p.base_priority.value
        extra = f" +{p.peak_schedules} peak" if p.peak_schedules else ""
        table.add_row(p.name, p.organization, p.source_kind, p.backup_type,
                      f"{p.schedule} {p.timezone}{extra}", when, prio, str(p.targets),
                      "yes" if p.active else "no")
    out.print(table)


@policies_app.command("show")
def policies_show(name: Annotated[str, typer.Argument(help="Policy name.", metavar="POLICY")],
                  at: AtOpt = None, json_: Json = False) -> None:
    """Everything the catalog holds about one policy, with its next run's priority and why.

    Example: `vowvault policies show grand-hall-db --at 2027-06-12`
    """
    when_at = _parse_at(at)
    ctx = Context.from_settings()
    try:
        d = queries.policy_details(ctx, name, at=when_at)
    finally:
        ctx.close()
    if json_:
        print_json({**d.values, "wedding_dates": d.wedding_dates, "next_run": d.next_run,
                    "effective_priority": d.priority, "priority_reason": d.priority_reason})
        return
    p, nxt = d.values, d.next_run
    rows = [
        ("name", p["name"]), ("organization", p["organization"]),
        ("description", p["description"] or ""), ("active", str(p["is_active"])),
        ("source", f"{p['source_kind'].value} {_source_text(p['source_config'])}"),
        ("backup type", p["backup_type"].value), ("base priority", p["priority"].value),
        ("next run's priority", f"{d.priority.value} ({d.priority_reason})"),
        ("wedding-day priority", str(p["wedding_day_priority"])),
        ("vendor type", p["vendor_type"].value if p["vendor_type"] else "-"),
        ("schedule", f"{p['schedule_cron']} ({p['timezone']})"),
        ("peak-season multiplier", str(p["peak_season_multiplier"])),
        ("effective schedules", "; ".join(p["effective_schedules"])),
        ("next run", f"{nxt.astimezone(zone(p['timezone'])):%Y-%m-%d %H:%M %Z}" if nxt
         else "-"),
        ("retention", f"{p['retention_days']} days; keep last {p['keep_last']}, daily "
                      f"{p['keep_daily']}, weekly {p['keep_weekly']}, monthly "
                      f"{p['keep_monthly']}, yearly {p['keep_yearly']}; min verified "
                      f"{p['min_verified_backups']}; legal hold {p['legal_hold_years']} years"),
        ("storage", "; ".join(f"{t['url']} [{t['tier']}]"
                              + ("" if t.get("required", True) else " (optional)")
                              for t in p["storage_targets"])),
        ("lifecycle", "; ".join(f"after {r['after_days']}d -> {r['tier']}"
                                for r in p["lifecycle_rules"]) or "-"),
        ("encryption", f"{'on' if p['encryption_enabled'] else 'OFF'} ({p['key_provider']})"),
        ("retries", str(p["max_retries"])), ("RTO target", f"{p['rto_target_minutes']} min"),
        ("wedding dates", ", ".join(str(day) for day in d.wedding_dates) or "-"),
        ("updated", f"{p['updated_at']:%Y-%m-%d %H:%M:%S %Z}"),
    ]
    out.print(key_value_table(rows))


@orgs_app.command("list")
def orgs_list(json_: Json = False) -> None:
    """Organizations in the catalog.

    Example: `vowvault orgs list --json`
    """
    ctx = Context.from_settings()
    try:
        orgs = queries.list_organizations(ctx)
    finally:
        ctx.close()
    if json_:
        print_json(orgs)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("SLUG", "NAME", "VENDOR TYPE", "ACTIVE", "ID"):
        table.add_column(col)
    for o in orgs:
        table.add_row(o["slug"], o["name"], o["vendor_type"], o["active"], o["id"])
    out.print(table)


@audit_app.command("list")
def audit_list(limit: Annotated[int, typer.Option(help="How many, newest first.",
                                                  callback=params.count)] = 20,
               json_: Json = False) -> None:
    """The newest audit entries.

    Example: `vowvault audit list --limit 100 --json`
    """
    ctx = Context.from_settings()
    try:
        rows = queries.audit_entries(ctx, limit)
    finally:
        ctx.close()
    if json_:
        print_json(rows)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("ID", "TIME (UTC)", "ACTOR", "ACTION", "SUMMARY"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), f"{r['occurred_at']:%Y-%m-%d %H:%M:%S}", r["actor"],
                      r["action"], r["summary"])
    out.print(table)


@audit_app.command("verify")
def audit_verify(expect_head: Annotated[str | None, typer.Option(
        "--expect-head", help="A head printed by an earlier verify: it must still be in the "
                              "chain.")] = None) -> None:
    """Check the audit chain with the audit key, against the heads kept on the storage
    targets and (``--expect-head``) one you kept; exit 3 naming what was tampered with.

    Example: `vowvault audit verify --expect-head HEAD`
    """
    from vowvault.engine import auditkey

    ctx = Context.from_settings()
    try:
        check = auditkey.verify(ctx, expect_head)
    finally:
        ctx.close()
    if check.problems or check.failures:
        for p in check.problems:
            err.print(f"audit row {p.row_id}: {p.problem}", markup=False)
        for line in check.failures:
            err.print(f"audit log: {line}", markup=False)
    else:
        out.print(f"audit log intact: {check.rows} rows, head {check.head}"
                  + (f" (row {check.head_id})" if check.head_id else ""))
    for line in check.anchors:
        out.print(f"  anchor on {line}", markup=False)
    if check.problems or check.failures:
        raise typer.Exit(3)


@catalog_app.command("rebuild")
def catalog_rebuild(
        source: Annotated[str, typer.Option("--from", help="A storage target URL holding "
                                                         "the backups.")],
        credentials_secret: Annotated[str | None, typer.Option(
            help="The secret naming the target's credentials.")] = None) -> None:
    """Recreate organizations, policies, backups and copies from a target's key objects
    and manifests (the organizations' keys must be in the key store: `keys import`).

    Example: `vowvault catalog rebuild --from file:///mnt/nas/vowvault`
    """
    from vowvault.engine.rebuild import rebuild

    ctx = Context.from_settings()
    try:
        report = rebuild(ctx, source.rstrip("/"), credentials_secret)
    finally:
        ctx.close()
    out.print(f"rebuilt from {source}: {len(report.organizations)} organizations "
              f"({', '.join(report.organizations)}), {len(report.policies)} policies "
              f"({', '.join(report.policies)}), {report.backups} backups", markup=False)
    for line in report.missing:
        out.print(f"  missing: {line}", markup=False)
    for line in report.skipped:
        out.print(f"  not recorded: {line}", markup=False)
    out.print("policies are inactive and keep everything until `vowvault policies apply` "
              "gives them their rules back; `vowvault backup verify ID` proves each backup again")


@app.command("doctor", rich_help_panel=helpstyle.TRUST)
def doctor() -> None:
    """Check the deployment's trust boundary: who holds the tenant role, whether tenants'
    policies are held to service rules, where the audit key comes from. Exit 1 if a
    check fails.

    Example: `vowvault doctor`
    """
    from vowvault.engine import doctor as checks

    ctx = Context.from_settings()
    try:
        report = checks.run(ctx)
    finally:
        ctx.close()
    for f in report.findings:
        out.print(f"{'ok  ' if f.ok else 'FAIL'} {f.check}: {f.detail}", markup=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command("demo", rich_help_panel=helpstyle.EVERYDAY)
def demo(policies: Annotated[Path, typer.Option(help="Policy file to apply.")]
         = Path("examples/policies.yaml"),
         pitr: Annotated[bool, typer.Option(
             "--pitr", help="Instead: point-in-time recovery of a throwaway cluster (needs "
                            "the PostgreSQL server binaries; cleans up after itself).")]
         = False) -> None:
    """Run the main job on the embedded default (SQLite catalog, local storage).

    Example: `vowvault demo` (or `vowvault demo --pitr`)
    """
    if pitr:
        from vowvault.cli.demo_pitr import run_pitr_demo

        run_pitr_demo(out)
        return
    from vowvault.cli.demo import run_demo

    run_demo(policies, out)


def _source_text(config: dict[str, object]) -> str:
    if config.get("kind") == "postgres":
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(str(config["dsn"]))
        return f"{info.get('host', 'local')}:{info.get('port', 5432)}/{info.get('dbname')}"
    return str(config.get("path"))


def _ago(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d"


def main() -> None:
    """Console entry point: VowvaultError becomes one line on stderr and an exit code; so do
    Ctrl-C (130) and SIGTERM (143), handled alike: the work in progress is stopped, what it
    wrote removed and its end recorded."""
    from blocks import register

    register()  # Prefect Secret blocks as named secrets (Prefect loads only when used)
    _note_old_spelling(sys.argv[1:])
    _only_the_invoked(sys.argv[1:])
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        code = app(standalone_mode=False)
    except VowvaultError as exc:
        extra: list[str] = []
        if _VERBOSE:  # -v: everything
            extra = [f"  {line}" for line in exc.details]
            cause = exc.__cause__ or exc.__context__
            while cause is not None:
                text = "\n    ".join(ln.strip() for ln in str(cause).splitlines()
                                     if ln.strip())
                extra.append(f"  caused by {type(cause).__name__}: {text}")
                cause = cause.__cause__ or cause.__context__
        _fail(f"vowvault: error: {exc}", exc.exit_code, extra)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.TyperException as exc:  # Typer's own Click: usage errors (exit 2)
        _usage_error(exc)
    if _SIGNALLED:  # Typer turns an interrupt into exit code 130, whichever signal it was
        if _SIGNALLED[0] == signal.SIGTERM:
            _fail("vowvault: terminated (SIGTERM): the work in progress was stopped", 143)
        _fail("vowvault: interrupted (Ctrl-C): the work in progress was stopped", 130)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: typer.TyperException) -> None:
    """A command line that does not parse: one line naming the mistake and where the help
    is (``-v`` adds the command's usage); with no arguments at all, the help itself."""
    ctx = getattr(exc, "ctx", None)
    # `vowvault`, `vowvault backup`: the help (Typer's Click keeps that class private)
    if type(exc).__name__ == "NoArgsIsHelpError":
        sys.stdout.write(exc.format_message() + "\n")
        sys.exit(0)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    message = " ".join(exc.format_message().split()).removesuffix(".")
    extra = [f"  {ctx.get_usage()}"] if ctx is not None and _VERBOSE else []
    _fail(f"vowvault: error: {message}{where}", getattr(exc, "exit_code", 2), extra)


def _only_the_invoked(args: list[str]) -> None:
    """Build only the command group the command line names.

    Typer turns every registered command into a Click command before it parses anything
    (about 0.1 s for the whole tree: each signature's annotations evaluated). A command
    line whose first word names a group or command needs only that one; anything else (no
    word, an unknown word, the root's own help) keeps the whole tree, so usage errors and
    the command list are unchanged.
    """
    words = [a for a in args if not a.startswith("-")]
    if not words or args[0] != words[0]:  # root options first (-v, --new-catalog): keep all
        return
    name = words[0]
    groups = [g for g in app.registered_groups if g.name == name]
    commands = [c for c in app.registered_commands
                if (c.name or c.callback.__name__.replace("_", "-")) == name]
    if groups or commands:
        app.registered_groups[:] = groups
        app.registered_commands[:] = commands


def _note_old_spelling(args: list[str]) -> None:
    """One line on stderr when a command is spelled the old way (it still works)."""
    words = [a for a in args if not a.startswith("-")]
    if words and words[0] in ALIASES and "--help" not in args:
        new = ALIASES[words[0]]
        rest = " ".join(words[1:2]) if new in ("backup", "catalog") else ""
        err.print(f"vowvault: note: `vowvault {' '.join([words[0], rest]).strip()}` is now "
                  f"`vowvault {' '.join([new, rest]).strip()}`; the old spelling goes in "
                  f"the next release", markup=False)


_SIGNALLED: list[int] = []
_VERBOSE: list[bool] = []
"""Non-empty when ``-v`` was given (a list: set from the Typer callback)."""


def _terminated(signum: int, frame: object) -> None:
    _SIGNALLED.append(signum)
    raise Terminated("terminated (SIGTERM)")


def _interrupted(signum: int, frame: object) -> None:
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


def _fail(message: str, code: int, extra: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    err.print(message, markup=False)
    for line in extra or ():
        err.print(line, markup=False)
    sys.exit(code)
