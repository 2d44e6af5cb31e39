"""The warm process of the ``vowvault`` command (``vowvault warm``): imports what commands
import, then forks each command a client hands it (the mechanics: ``vowvault.warm``).

    python -m vowvault.cli.warmcli --cli FINGERPRINT [--watch PID] [--idle SECONDS]
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from vowvault import warm


def _cli_warm_up() -> None:
    """Import what commands import, starting nothing and printing nothing: the command
    line (its consoles are made again in each fork: ``fresh_consoles``), the catalog with
    its mappers configured, every module of the engine and the data plane."""
    import importlib

    for name in ("typer", "typer.main", "typer.core", "rich.console", "rich.table",
                 "rich.progress", "rich.markup", "pydantic", "sqlalchemy", "sqlalchemy.orm",
                 "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql", "psycopg",
                 "yaml", "croniter", "vowvault.catalog.db", "vowvault.catalog.models",
                 "vowvault.catalog.audit", "vowvault.plan", "vowvault.settings"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    warm.import_packages(("engine", "repository", "sources", "codec", "storage", "keys",
                          "policies"))
    with contextlib.suppress(ImportError):  # Typer's parameter coercion, made on first use
        importlib.import_module("typer._adapters")
    importlib.import_module("vowvault.cli.main")
    for name in ("backups", "orchestration", "keys", "maintenance", "gdpr", "templates", "wal",
                 "tables", "params"):
        importlib.import_module(f"vowvault.cli.{name}")
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # what the first query of each command would do


def _cli_main(argv: list[str]) -> None:
    import argparse

    # `python -m` put the working directory first on the path; the console script puts
    # its own directory there: import what a cold `vowvault` imports
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = os.path.dirname(sys.executable)

    parser = argparse.ArgumentParser(prog="python -m vowvault.cli.warmcli")
    parser.add_argument("--cli", required=True, metavar="FINGERPRINT")
    parser.add_argument("--watch", type=int, metavar="PID")
    parser.add_argument("--idle", type=float, metavar="SECONDS",
                        default=float(os.environ.get("VOWVAULT_WARM_IDLE", "900")))
    args = parser.parse_args(argv)
    request = warm.serve(args.cli, warm.cli_fingerprint(), _cli_warm_up, args.watch,
                         args.idle, _command_name)
    warm.adopt(request)  # only a fork gets here
    warm.remember_command_env(request["env"])
    sys.argv = [str(request.get("argv0") or "vowvault"),
                *[str(a) for a in request.get("argv", [])]]
    # A console script's __main__ has no spec or package (Click names the program from
    # them: `vowvault`, not `python -m vowvault.warm`)
    main_module = sys.modules["__main__"]
    main_module.__spec__ = None
    main_module.__package__ = None
    from vowvault.cli import main as cli

    cli.fresh_consoles()
    try:
        cli.main()
    except SystemExit as exc:
        _exit_quickly(exc.code)


def _exit_quickly(code: Any) -> None:
    """End the fork as the interpreter would, without tearing down the modules the warm
    process imported (about a tenth of a second, spent on nothing): wait for the
    threads, run the exit handlers (logging's flush, weakref finalizers, temporary
    directories), flush the standard streams, then leave with the command's exit code."""
    import atexit
    import threading

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as the interpreter does with sys.exit("message")
        sys.stderr.write(f"{code}\n")
        status = 1
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not me and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status & 0xFF)


def _command_name(request: dict[str, Any]) -> str:
    """The command's words only (its options can name a DSN with a password)."""
    return "vowvault " + " ".join(warm.command_words([str(a) for a in request.get("argv", [])]))


if __name__ == "__main__":
    _cli_main(sys.argv[1:])
