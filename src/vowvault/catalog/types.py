"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

UTC = dt.UTC


class TZDateTime(sa.TypeDecorator[dt.datetime]):
    """TIMESTAMPTZ on PostgreSQL; on SQLite, UTC text. Always returns aware UTC datetimes."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to a timestamptz column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL."""

UUIDList = sa.JSON().with_variant(postgresql.ARRAY(postgresql.UUID(as_uuid=False)), "postgresql")
"""UUID[] on PostgreSQL (as the report has it), a JSON list of strings on SQLite."""

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""SQLite only auto-increments INTEGER PRIMARY KEY."""


def pg_enum(enum_cls: type[enum.Enum], name: str) -> sa.Enum:
    """A native PostgreSQL enum type (VARCHAR + CHECK on SQLite)."""
    return sa.Enum(enum_cls, name=name, values_callable=_values, create_constraint=True,
                   validate_strings=True)


def check_enum(enum_cls: type[enum.Enum], name: str, length: int = 32) -> sa.Enum:
    """A VARCHAR with a CHECK constraint on every backend (no PostgreSQL enum type)."""
    return sa.Enum(enum_cls, name=name, values_callable=_values, native_enum=False,
                   create_constraint=True, length=length, validate_strings=True)


def _values(enum_cls: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in enum_cls]


class gen_random_uuid(FunctionElement[Any]):
    """Server-side UUID default: gen_random_uuid() on PostgreSQL, random hex on SQLite."""

    type = sa.Uuid()
    inherit_cache = True


@compiles(gen_random_uuid, "postgresql")
def _pg_uuid(element: Any, compiler: Any, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(gen_random_uuid)
def _sqlite_uuid(element: Any, compiler: Any, **kw: Any) -> str:
    return "(lower(hex(randomblob(16))))"
