"""The ``vowvault`` console entry point.

``vowvault wal push`` and ``vowvault wal fetch`` are run by PostgreSQL once per WAL
segment (``archive_command``, ``restore_command``): they are answered here with the
standard library alone (``vowvault.walspool``), in milliseconds, before Typer, SQLAlchemy
or anything else is imported; so is ``vowvault --version``, and a ``--help`` page rendered
before (``vowvault.cli.helpcache``). Every other command goes to ``vowvault.cli.main``: in a
fork of this environment's warm process if one runs (``vowvault.warm``, ``vowvault warm``),
else here.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:2] in (["wal", "push"], ["wal", "fetch"]) and "--help" not in args:
        from vowvault import walspool

        sys.exit(walspool.main(args[1:]))
    if args == ["--version"]:  # before Typer and Rich: in a few milliseconds
        from vowvault import __version__

        sys.stdout.write(f"vowvault {__version__}\n")
        sys.exit(0)
    if args[-1:] == ["--help"]:
        _help(args)
    if args:
        from vowvault import warm

        warm.cli_forward(args)  # forked from a warm process, if one runs: ends there
    from vowvault.cli.main import main as full

    full()


def _help(args: list[str]) -> None:
    """A page rendered before, without Typer or Rich; else render it and keep it."""
    from vowvault.cli import helpcache

    if helpcache.is_help_request(args):
        page = helpcache.key(args)
        text = helpcache.load(page)
        if text is not None:
            sys.stdout.write(text)
            sys.exit(0)
        from vowvault.cli.main import main as full

        with helpcache.recording(page):
            full()
