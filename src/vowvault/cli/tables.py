"""Small layouts shared by the commands: key/value tables and ``--json`` output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import sys
import uuid
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a "
                                                   "table.")]


def key_value_table(rows: Iterable[tuple[str, str]]) -> Table:
    """Two columns, keys in bold, no borders: what `show` commands print."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout: dataclasses as objects, times in ISO 8601,
    enums by value, UUIDs and paths as strings, decimals as numbers."""
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID | Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
