"""Engines, sessions and migrations of the catalog."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from vowvault.errors import CatalogError, ConfigError
from vowvault.settings import Settings, load_settings, normalise_database_url

if TYPE_CHECKING:
    from alembic.config import Config

HEAD = "0005"
"""The schema revision this code needs. Kept here so that ordinary commands need not load
Alembic; a test checks it is the migrations' head."""


_USE = ("set VOWVAULT_DATABASE_URL to postgresql://user@host/dbname, or unset it for the "
        "embedded catalog in VOWVAULT_HOME")


def make_engine(url: str) -> sa.Engine:
    """An engine for a PostgreSQL or SQLite catalog URL; ``ConfigError`` for any other URL
    (never repeating one that does not parse: it may hold a password)."""
    url = normalise_database_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(f"the catalog URL is not a database URL: {_USE}") from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(f"the catalog URL {parsed.render_as_string()} is neither "
                          f"PostgreSQL nor SQLite: {_USE}")
    try:
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _make_parent(Path(parsed.database))
            engine = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", _sqlite_begin)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ImportError, sa.exc.ArgumentError) as exc:
        raise ConfigError(f"the catalog URL {parsed.render_as_string()} cannot be used "
                          f"({exc}): {_USE}") from exc


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create {path.parent} for the catalog {path}: "
                           f"{exc.strerror or exc}: set VOWVAULT_HOME to a directory you can "
                           f"write") from exc


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (below).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writing transaction takes the write lock up front (IMMEDIATE): concurrent writers
    # wait (busy_timeout) instead of failing when a read snapshot cannot be upgraded to a
    # write. A reading one takes no lock at all (WAL: readers never wait for the writer).
    if conn.get_execution_options().get(_READ_ONLY):
        conn.exec_driver_sql("BEGIN DEFERRED")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


_READ_ONLY = "vowvault_read_only"


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("vowvault.catalog") / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalise_database_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return HEAD


def migrations_head() -> str:
    """The head of the migration scripts (what HEAD must equal)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _refuse_lost_catalog(settings: Settings, path: str) -> None:
    """An embedded catalog that is missing or empty while the local key store holds
    organizations' keys was lost, not never made: starting a new one silently would say
    "no backups" about a storage full of them."""
    keys = sorted((settings.home / "keys").glob("*/kek-v*.key"))
    if not keys:
        return
    orgs = len({k.parent.name for k in keys})
    raise CatalogError(f"the catalog {path} is missing or empty, but "
                       f"{settings.home / 'keys'} holds keys of {orgs} organization(s): "
                       f"their backups may still be on storage; restore the catalog from "
                       f"its backup, or start a new, empty one with "
                       f"`vowvault --new-catalog COMMAND`")


def current_revision(engine: sa.Engine) -> str | None:
    """The catalog's schema revision (None: an empty database); ``CatalogError`` when the
    catalog cannot be reached or is not a database."""
    where = engine.url.render_as_string()  # without the password
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.OperationalError as exc:
        hint = ""
        if engine.dialect.name == "sqlite" and "unable to open" in str(exc):
            hint = (" (is it a database file, in a directory you may write? see "
                    "VOWVAULT_HOME)")
        raise CatalogError(f"cannot reach the catalog at {where}: {_first_line(exc)}{hint}"
                           ) from exc
    except sa.exc.DatabaseError as exc:  # not a database at all: a damaged file
        raise CatalogError(f"the catalog at {where} is damaged ({_first_line(exc)}): "
                           f"restore it from its backup") from exc


def upgrade(engine: sa.Engine, revision: str = "head", *, actor: str | None = None) -> None:
    """Migrate the catalog to ``revision`` (idempotent). With an ``actor``, a migration that
    changed something is recorded in the audit log."""
    from alembic import command

    _migrate(engine, revision, command.upgrade, actor)


def downgrade(engine: sa.Engine, revision: str, *, actor: str | None = None) -> None:
    """Migrate the catalog back to ``revision`` (an older vowvault's schema)."""
    from alembic import command

    _migrate(engine, revision, command.downgrade, actor)


def _migrate(engine: sa.Engine, revision: str, step: Callable[[Config, str], None],
             actor: str | None) -> None:
    """One transaction: all of the migration or none of it."""
    cfg = alembic_config()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    before = current_revision(engine)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw = conn.connection.dbapi_connection
        if sqlite:
            # SQLite alters a table by copying it, dropping the original and renaming the
            # copy; with foreign keys on, dropping a table that rows refer to fails. Off for
            # the migration (a pragma, so outside the transaction), checked before commit.
            assert raw is not None
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise CatalogError(f"migration to {revision} would break "
                                           f"{len(broken)} references (first: {broken[0]}); "
                                           f"nothing was changed")
        finally:
            if sqlite:
                assert raw is not None
                raw.execute("PRAGMA foreign_keys=ON")
    after = current_revision(engine)
    if actor and after != before:
        from vowvault.catalog import audit

        with Session(engine) as session, session.begin():
            audit.record(session, actor=actor, action=f"catalog.{step.__name__}",
                         target_type="catalog", target_id=after,
                         summary=f"schema migrated from {before or 'empty'} to {after}",
                         before={"revision": before}, after={"revision": after})


def postgres_ddl() -> str:
    """The PostgreSQL DDL the migrations produce, rendered offline (no server needed)."""
    from alembic import command

    cfg = alembic_config("postgresql+psycopg://offline/vowvault")
    buf = io.StringIO()
    cfg.output_buffer = buf
    command.upgrade(cfg, "head", sql=True)
    return buf.getvalue()


class Catalog:
    """A handle on one catalog database: its engine and two session factories.

    ``session()`` is a writing transaction, ``read()`` a reading one. Either is short: it
    is opened, used and closed again with no storage I/O, subprocess, network request or
    wait inside it (on SQLite a writing transaction holds the one write lock until it
    ends; on PostgreSQL an open transaction holds back vacuum and row locks).
    """

    def __init__(self, engine: sa.Engine, audit_key: bytes | None = None) -> None:
        self.engine = engine
        self.audit_key = audit_key
        """The key the audit chain is kept with (from the key provider side; see
        ``catalog.audit``); None: rows are chained with plain SHA-256."""
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        options: dict[str, object] = {_READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["postgresql_readonly"] = True
        self._readers = sessionmaker(engine.execution_options(**options),
                                     expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings | None = None, *, migrate_embedded: bool = True) -> Catalog:
        """Open the configured catalog; the embedded SQLite one is migrated on first use, a
        PostgreSQL one must be migrated explicitly (``vowvault catalog upgrade``)."""
        settings = settings or load_settings()
        engine = make_engine(settings.database_url)
        if settings.is_embedded and not settings.new_catalog:
            path = engine.url.database or ""
            if path and (not os.path.exists(path) or os.path.getsize(path) == 0):
                _refuse_lost_catalog(settings, path)  # before connecting makes a file
        catalog = cls(engine)
        rev = current_revision(engine)
        if rev is None and settings.is_embedded and not settings.new_catalog:
            engine.dispose()
            _refuse_lost_catalog(settings, str(engine.url.database))
        if rev != head_revision():
            if settings.is_embedded and migrate_embedded:
                upgrade(engine, actor=settings.actor)
            elif migrate_embedded:
                raise CatalogError(
                    f"catalog at {engine.url.render_as_string()} is at revision {rev or 'none'}, "
                    f"this vowvault needs {head_revision()}: run `vowvault catalog upgrade`")
        return catalog

    @contextlib.contextmanager
    def session(self, *, commit: bool = True) -> Iterator[Session]:
        """A transaction: committed on success (unless ``commit`` is false, for dry runs),
        rolled back on any error."""
        session = self._sessions()
        session.info["vowvault.audit_key"] = self.audit_key
        try:
            yield session
            if commit:
                session.commit()
            else:
                session.rollback()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A reading transaction: never takes SQLite's write lock, refused by PostgreSQL if
        it writes, and refused here before any write reaches either."""
        session = self._readers()
        sa.event.listen(session, "before_flush", _refuse_writes)
        try:
            yield session
        finally:
            session.close()  # ends the transaction; what was read stays loaded

    def dispose(self) -> None:
        self.engine.dispose()


def _refuse_writes(session: Session, _context: object, _instances: object) -> None:
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("a reading catalog session tried to write: use Catalog.session()")


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]
