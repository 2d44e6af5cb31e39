"""Fixtures shared by every layer of tests: real PostgreSQL databases, embedded catalogs."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from vowvault.catalog.db import Catalog, make_engine, upgrade
from vowvault.engine.context import Context
from vowvault.policies.apply import apply_policy_file
from vowvault.policies.loader import parse_policy_text
from vowvault.settings import Settings

PG_ADMIN_URL = os.environ.get("VOWVAULT_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(PG_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:  # pragma: no cover - the suite needs it
        pytest.exit(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}. Start it with "
                    f"`pg_ctlcluster --skip-systemctl-redirect 15 main start`.", returncode=3)
    yield conn
    conn.close()


@pytest.fixture
def pg_database(pg_admin: psycopg.Connection) -> Iterator[Callable[[], str]]:
    """A factory of empty, throw-away databases on the real server; dropped afterwards."""
    created: list[str] = []

    def make() -> str:
        name = f"vvtest_{uuid.uuid4().hex[:12]}"
        pg_admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_db(PG_ADMIN_URL, name)

    yield make
    for name in created:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_database: Callable[[], str]) -> str:
    """A freshly migrated PostgreSQL catalog."""
    url = pg_database()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def pg_catalog(pg_url: str) -> Iterator[Catalog]:
    catalog = Catalog(make_engine(pg_url))
    yield catalog
    catalog.dispose()


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Iterator[Catalog]:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    upgrade(engine)
    catalog = Catalog(engine)
    yield catalog
    catalog.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest) -> Catalog:
    """The same test on the embedded and the production catalog."""
    return request.getfixturevalue(f"{request.param}_catalog".replace("postgresql", "pg"))


def scalar(engine: sa.Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def password_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A throw-away PostgreSQL cluster that demands a password (the shared server trusts
    everyone on loopback). Run as the postgres user: servers refuse to run as root."""
    import shutil
    import subprocess

    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 check=True).stdout.strip())
    if not (bindir / "initdb").exists():
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    import tempfile

    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="vowvault-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres")
    shutil.chown(sock, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pwfile = base / "pw"
    pwfile.write_text("s3cret-vows\n")
    shutil.chown(pwfile, "postgres")
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-host=scram-sha-256", "--auth-local=trust", f"--pwfile={pwfile}"],
                   check=True, capture_output=True)
    port = free_port()
    log = base / "log"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                    "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        yield {"port": port, "password": "s3cret-vows",
               "url": f"postgresql://postgres@127.0.0.1:{port}/postgres"}
    finally:
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


# Engine-level fixtures: a private VOWVAULT_HOME and policies applied through the real
# policy-file path.


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def ctx(home: Path) -> Iterator[Context]:
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'catalog.db'}",
                        actor="tester")
    context = Context.from_settings(settings, heartbeat_seconds=0.5)
    yield context
    context.close()


PolicyMaker = Callable[..., str]


@pytest.fixture
def policy(ctx: Context, tmp_path: Path) -> PolicyMaker:
    """policy(name, source_yaml, backup_type=..., targets=[...]) -> name, applied."""

    def make(name: str, source: str, *, backup_type: str = "full",
             targets: list[str] | None = None, extra: str = "", org: str = "lumiere",
             tier: str = "HOT", optional_copies: bool = False,
             credentials_secret: str | None = None) -> str:
        urls = targets or [f"file://{tmp_path / 'storage'}"]
        secret = f", credentials_secret: \"{credentials_secret}\"" if credentials_secret else ""
        storage = "\n".join(
            f"      - {{url: \"{u}\", tier: {tier}, required: "
            f"{'false' if optional_copies and i else 'true'}{secret}}}"
            for i, u in enumerate(urls))
        text = textwrap.dedent(f"""\
            version: 1
            organizations:
              - {{slug: {org}, name: {org}, vendor_type: photographer}}
            policies:
              - name: {name}
                organization: {org}
                source: {source}
                backup_type: {backup_type}
                schedule: {{cron: "0 2 * * *", timezone: UTC}}
                peak_season: {{multiplier: 1}}
            """) + "    storage:\n" + storage + "\n" + textwrap.indent(extra, "    ")
        apply_policy_file(ctx.catalog, parse_policy_text(text, "test.yaml", {}), actor="tester")
        return name

    return make


# A real Prefect API for flow tests: Prefect's own test harness (a temporary server with its
# own database), started once per session, and a private VOWVAULT_HOME per test.


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ.setdefault("VOWVAULT_HOME", str(tmp_path_factory.mktemp("vvhome")))
    import flows  # noqa: F401 - offline defaults first

    # isort: split
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def vv_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own catalog, keys and storage (tasks build their context lazily)."""
    import tasks.common

    home = tmp_path / "home"
    monkeypatch.setenv("VOWVAULT_HOME", str(home))
    monkeypatch.delenv("VOWVAULT_DATABASE_URL", raising=False)
    monkeypatch.setattr(tasks.common, "_ctx", None)
    yield home
    if tasks.common._ctx is not None:
        tasks.common._ctx.close()


@pytest.fixture
def policy_on(tmp_path: Path) -> Callable[..., str]:
    """Apply a minimal policy to any context's catalog (e.g. one on PostgreSQL); the
    policies applied before stay active (each call applies all of them)."""
    applied: dict[int, list[str]] = {}

    def make(ctx: Context, name: str, source: str, cron: str = "0 2 * * *") -> str:
        entries = applied.setdefault(id(ctx), [])
        entries.append(textwrap.dedent(f"""\
              - name: {name}
                organization: lumiere
                source: {source}
                schedule: {{cron: "{cron}", timezone: UTC}}
                peak_season: {{multiplier: 1}}
                storage: [{{url: "file://{tmp_path / 'storage'}"}}]
            """))
        text = ("version: 1\norganizations: [{slug: lumiere, name: Lumiere}]\npolicies:\n"
                + "".join(entries))
        apply_policy_file(ctx.catalog, parse_policy_text(text, "t.yaml", {}), actor="tester")
        return name

    return make
