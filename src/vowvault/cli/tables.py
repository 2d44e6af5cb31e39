"""Small Rich layouts shared by the commands."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table


def key_value_table(rows: Iterable[tuple[str, str]]) -> Table:
    """Two columns, keys in bold, no borders: what `show` commands print."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table
