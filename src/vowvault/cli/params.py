"""Checks on option values the commands share, made as they are parsed (a mistake is a
usage error, exit 2, before anything is opened)."""

from __future__ import annotations

import math

import typer

MAX_ROWS = 1_000_000_000
"""The most a ``--limit`` may ask for (both catalogs take it)."""
MAX_DAYS = 3660
"""Ten years: the longest history a report covers."""


def count(value: int) -> int:
    """How many rows to show: at least one."""
    if not 1 <= value <= MAX_ROWS:
        raise typer.BadParameter(f"{value} is not a number of rows (1 to {MAX_ROWS})")
    return value


def days(value: int) -> int:
    """How many days back: at least one, at most ``MAX_DAYS``."""
    if not 1 <= value <= MAX_DAYS:
        raise typer.BadParameter(f"{value} is not a number of days (1 to {MAX_DAYS})")
    return value


def seconds(value: float | None) -> float | None:
    """A number of seconds to wait: finite and not negative (``nan``, ``inf`` and ``-5``
    are typos, not ways to say "forever" or "never")."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise typer.BadParameter(f"{value} is not a number of seconds (0 or more)")
    return value


def positive_seconds(value: float | None) -> float | None:
    """As ``seconds``, and more than 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} is not a number of seconds (more than 0)")
    return value
