"""Fixtures shared by every layer of tests: real PostgreSQL databases, embedded catalogs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from vowvault.catalog.db import Catalog, make_engine, upgrade

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
