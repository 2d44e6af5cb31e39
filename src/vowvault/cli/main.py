"""The ``vowvault`` command line: parse, call the core, show the result.

Errors the user can act on are printed as one line on stderr, with an exit code from
``vowvault.errors`` (2 for bad input); nothing here holds business logic.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from vowvault import __version__
from vowvault.catalog import audit as audit_log
from vowvault.catalog.db import Catalog, current_revision, head_revision, make_engine, upgrade
from vowvault.catalog.models import AuditEntry, BackupPolicy, Organization, WeddingDate
from vowvault.cli.tables import key_value_table
from vowvault.errors import NotFound, VowvaultError
from vowvault.scheduling import effective_priority, local_date, next_run, zone
from vowvault.settings import load_settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Policy-driven, encrypted, verified backups, orchestrated by Prefect.")
db_app = typer.Typer(no_args_is_help=True, help="The catalog database.")
policies_app = typer.Typer(no_args_is_help=True, help="Backup policies declared in YAML.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
orgs_app = typer.Typer(no_args_is_help=True, help="Organizations (tenants).")
app.add_typer(db_app, name="db")
app.add_typer(policies_app, name="policies")
app.add_typer(audit_app, name="audit")
app.add_typer(orgs_app, name="orgs")
app.add_typer(orgs_app, name="org", hidden=True)

# Wide when piped (tests, logs), the terminal's width otherwise.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

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
          ) -> None:
    """vowvault keeps wedding data safe: see `vowvault COMMAND --help`."""
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


def _catalog() -> Catalog:
    return Catalog.open(load_settings())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the catalog to this version's schema."""
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


@db_app.command("current")
def db_current() -> None:
    """Show the catalog's schema revision and the one this vowvault needs."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    rev = current_revision(engine)
    engine.dispose()
    out.print(f"catalog revision: {rev or 'none (run `vowvault db upgrade`)'}; "
              f"needed: {head_revision()}")


@db_app.command("schema")
def db_schema() -> None:
    """Print the PostgreSQL DDL of the catalog (what `db upgrade` builds; see schema.sql)."""
    from vowvault.catalog.db import postgres_ddl

    sys.stdout.write(postgres_ddl())


@policies_app.command("validate")
def policies_validate(file: FileArg) -> None:
    """Check a policy file without touching the catalog."""
    from vowvault.policies.loader import load_policy_file

    parsed = load_policy_file(file)
    out.print(f"{file}: {len(parsed.organizations)} organizations, "
              f"{len(parsed.policies)} policies, {len(parsed.weddings)} weddings: valid")


@policies_app.command("apply")
def policies_apply(file: FileArg,
                   dry_run: Annotated[bool, typer.Option("--dry-run",
                                                         help="Show the plan only.")] = False,
                   ) -> None:
    """Make the catalog match the file (idempotent); removed policies are deactivated."""
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import load_policy_file

    parsed = load_policy_file(file)
    settings = load_settings()
    catalog = Catalog.open(settings)
    changes = apply_policy_file(catalog, parsed, actor=settings.actor, dry_run=dry_run)
    catalog.dispose()
    changed = [c for c in changes if c.action != "unchanged"]
    for change in changes:
        style = "dim" if change.action == "unchanged" else None
        out.print(("  would " if dry_run else "  ") + change.describe(), style=style)
    verb = "would change" if dry_run else "changed"
    out.print(f"{file}: {len(changed)} {verb}, {len(changes) - len(changed)} unchanged")


@policies_app.command("list")
def policies_list(all_: Annotated[bool, typer.Option("--all", help="Include inactive.")]
                  = False) -> None:
    """Policies with their schedule and next run."""
    catalog = _catalog()
    now = dt.datetime.now(dt.UTC)
    with catalog.session() as session:
        query = sa.select(BackupPolicy).order_by(BackupPolicy.name)
        if not all_:
            query = query.where(BackupPolicy.is_active.is_(True))
        policies = list(session.execute(query).scalars())
        weddings = _wedding_dates(session)
        table = Table(box=None, pad_edge=False)
        for col in ("NAME", "ORGANIZATION", "SOURCE", "TYPE", "SCHEDULE", "NEXT RUN",
                    "PRIORITY", "TARGETS", "ACTIVE"):
            table.add_column(col)
        for p in policies:
            nxt = next_run(p.effective_schedules, p.timezone, now) if p.is_active else None
            if nxt:
                day = local_date(nxt, p.timezone)
                prio = effective_priority(p.priority, p.wedding_day_priority, day,
                                          weddings.get(p.organization_id, set()))
                when = f"{nxt.astimezone(zone(p.timezone)):%Y-%m-%d %H:%M %Z} " \
                       f"(in {_ago(nxt - now)})"
                prio_text = prio.value if prio == p.priority else \
                    f"{prio.value} (wedding day; base {p.priority.value})"
            else:
                when, prio_text = "-", p.priority.value
            extra = f" +{len(p.effective_schedules) - 1} peak" \
                if len(p.effective_schedules) > 1 else ""
            table.add_row(p.name, p.organization.slug, p.source_kind.value.lower(),
                          p.backup_type.value, f"{p.schedule_cron} {p.timezone}{extra}", when,
                          prio_text, str(len(p.storage_targets)),
                          "yes" if p.is_active else "no")
    catalog.dispose()
    if not policies:
        out.print("no policies; apply a file with `vowvault policies apply FILE`")
        return
    out.print(table)


@policies_app.command("show")
def policies_show(name: str) -> None:
    """Everything the catalog holds about one policy."""
    catalog = _catalog()
    now = dt.datetime.now(dt.UTC)
    with catalog.session() as session:
        p = session.execute(sa.select(BackupPolicy).where(BackupPolicy.name == name)
                            ).scalar_one_or_none()
        if p is None:
            raise NotFound(f"no policy named {name!r}; see `vowvault policies list --all`")
        weddings = _wedding_dates(session).get(p.organization_id, set())
        nxt = next_run(p.effective_schedules, p.timezone, now)
        rows = [
            ("name", p.name), ("organization", p.organization.slug),
            ("description", p.description or ""), ("active", str(p.is_active)),
            ("source", f"{p.source_kind.value} {_source_text(p.source_config)}"),
            ("backup type", p.backup_type.value), ("priority", p.priority.value),
            ("wedding-day priority", str(p.wedding_day_priority)),
            ("vendor type", p.vendor_type.value if p.vendor_type else "-"),
            ("schedule", f"{p.schedule_cron} ({p.timezone})"),
            ("peak-season multiplier", str(p.peak_season_multiplier)),
            ("effective schedules", "; ".join(p.effective_schedules)),
            ("next run", f"{nxt.astimezone(zone(p.timezone)):%Y-%m-%d %H:%M %Z}" if nxt else "-"),
            ("retention", f"{p.retention_days} days; keep last {p.keep_last}, daily "
                          f"{p.keep_daily}, weekly {p.keep_weekly}, monthly {p.keep_monthly}, "
                          f"yearly {p.keep_yearly}; min verified {p.min_verified_backups}; "
                          f"legal hold {p.legal_hold_years} years"),
            ("storage", "; ".join(f"{t['url']} [{t['tier']}]"
                                  + ("" if t.get("required", True) else " (optional)")
                                  for t in p.storage_targets)),
            ("lifecycle", "; ".join(f"after {r['after_days']}d -> {r['tier']}"
                                    for r in p.lifecycle_rules) or "-"),
            ("encryption", f"{'on' if p.encryption_enabled else 'OFF'} ({p.key_provider})"),
            ("retries", str(p.max_retries)), ("RTO target", f"{p.rto_target_minutes} min"),
            ("wedding dates", ", ".join(str(d) for d in sorted(weddings)) or "-"),
            ("updated", f"{p.updated_at:%Y-%m-%d %H:%M:%S %Z}"),
        ]
    catalog.dispose()
    out.print(key_value_table(rows))


@orgs_app.command("list")
def orgs_list() -> None:
    """Organizations in the catalog."""
    catalog = _catalog()
    with catalog.session() as session:
        orgs = list(session.execute(sa.select(Organization).order_by(Organization.slug))
                    .scalars())
        table = Table(box=None, pad_edge=False)
        for col in ("SLUG", "NAME", "VENDOR TYPE", "ACTIVE", "ID"):
            table.add_column(col)
        for o in orgs:
            table.add_row(o.slug, o.name, o.vendor_type.value,
                          "shredded" if o.shredded_at else str(o.is_active), str(o.id))
    catalog.dispose()
    out.print(table)


@audit_app.command("list")
def audit_list(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20) -> None:
    """The newest audit entries."""
    catalog = _catalog()
    with catalog.session() as session:
        rows = list(session.execute(sa.select(AuditEntry).order_by(AuditEntry.id.desc())
                                    .limit(limit)).scalars())
    catalog.dispose()
    table = Table(box=None, pad_edge=False)
    for col in ("ID", "TIME (UTC)", "ACTOR", "ACTION", "SUMMARY"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), f"{r.occurred_at:%Y-%m-%d %H:%M:%S}", r.actor, r.action,
                      r.summary or "")
    out.print(table)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 3 and name the rows if it was tampered with."""
    catalog = _catalog()
    with catalog.session() as session:
        rows = audit_log.all_rows(session)
        problems = audit_log.verify_chain(rows)
    catalog.dispose()
    if problems:
        for p in problems:
            err.print(f"audit row {p.row_id}: {p.problem}")
        raise typer.Exit(3)
    head = rows[-1].row_hash if rows else audit_log.GENESIS
    out.print(f"audit log intact: {len(rows)} rows, head {head}")


@app.command("demo")
def demo(policies: Annotated[Path, typer.Option(help="Policy file to apply.")]
         = Path("examples/policies.yaml")) -> None:
    """Run the main job on the embedded default (SQLite catalog, local storage)."""
    from vowvault.cli.demo import run_demo

    run_demo(policies, out)


def _wedding_dates(session: sa.orm.Session) -> dict[object, set[dt.date]]:
    found: dict[object, set[dt.date]] = {}
    for org_id, day in session.execute(sa.select(WeddingDate.organization_id,
                                                 WeddingDate.wedding_date)):
        found.setdefault(org_id, set()).add(day)
    return found


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
    """Console entry point: VowvaultError becomes one line on stderr and an exit code."""
    from tasks.secrets import register

    register()  # Prefect Secret blocks as named secrets (Prefect loads only when used)
    try:
        app()
    except VowvaultError as exc:
        err.print(f"vowvault: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
