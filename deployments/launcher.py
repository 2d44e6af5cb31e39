"""The flow-run command of vowvault's process work pools: Prefect's engine, forked warm
(the mechanics, shared with the ``vowvault`` command, are in ``vowvault.warm``).

A process worker starts every flow run as a new ``python -m prefect.engine``, which spends
about two seconds importing Prefect and vowvault before the run's first step. Deployments
made by ``vowvault deploy --work-pool`` name this module as their command instead. It is
a small client (standard library only) that asks a *warm process* to fork the run:

- The warm process is started by the first run (and by the first run of every other
  environment: one per environment fingerprint, at most ``MAX_WARM``), imports Prefect's
  engine and vowvault's flows once, then waits on a Unix socket in a private directory
  (``$XDG_RUNTIME_DIR/vowvault`` or ``/tmp/vowvault-<uid>``, mode 0700, owner checked;
  both ends check the other's uid with SO_PEERCRED). It never starts a thread or opens a
  connection, so forking it is safe.
- A run is forked only when its environment is exactly the one the warm process imported
  with, apart from Prefect's per-run variables (``PREFECT__*``), with the same working
  directory and interpreter, and no imported file changed since (size and mtime of every
  loaded module): else the client runs ``python -m prefect.engine`` itself, as Prefect
  would have, so a fork never differs from a fresh start in what it reads.
- The forked run gets the client's stdin, stdout and stderr (the worker's log stream), its
  environment and working directory, and runs ``prefect.engine`` as ``__main__``, ending
  through the interpreter's normal shutdown (threads joined, logs flushed). The client
  forwards SIGTERM, SIGINT and SIGHUP to it and exits with its exit status (a run killed by
  a signal kills the client with the same signal), so the worker sees what it would have
  seen. If the client dies (SIGKILL), the run is killed: it holds the read end of a pipe
  the client holds open.
- The warm process ends when the worker that started the first run ends, after
  ``VOWVAULT_LAUNCHER_IDLE`` seconds without a run (default 900), or when its code
  changed; runs in progress finish first. ``VOWVAULT_LAUNCHER=off`` in the worker's
  environment turns it all off.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from vowvault import warm as _warm

MAX_WARM = _warm.MAX_WARM
RUNTIME_PREFIX = _warm.FLOW_RUNTIME_PREFIX
runtime_dir = _warm.runtime_dir
_stale = _warm.stale
_exit_like = _warm.exit_like


def fingerprint(env: dict[str, str], cwd: str, executable: str) -> str:
    """What a warm process must share with a run it forks: everything but PREFECT__*."""
    return _warm.fingerprint("flow", env, cwd, executable)


# ------------------------------------------------------------------------------- client

def main() -> None:
    """The flow-run command: fork the run in a warm process, or be the engine."""
    if os.environ.get("VOWVAULT_LAUNCHER", "on").lower() in ("off", "0", "false", "no") \
            or not sys.platform.startswith("linux"):
        _exec_engine()
    env = dict(os.environ)
    cwd = os.getcwd()
    fp = fingerprint(env, cwd, sys.executable)
    where = runtime_dir()
    if where is None:
        _exec_engine()
    sock = _warm.connect(where / f"{fp}.sock")
    if sock is None:
        if _warm.live_warm(where) < MAX_WARM:
            warm_env = {k: v for k, v in env.items() if not k.startswith(RUNTIME_PREFIX)}
            argv = [sys.executable, "-m", "deployments.launcher", "--warm", fp,
                    "--watch", str(os.getppid())]  # it watches the worker (our parent)
            _warm.start_warm(where, fp, argv, warm_env, cwd)
        _exec_engine()
    code = _warm.run_forked(sock, {"env": env, "cwd": cwd})
    if code is None:  # the warm process refused (its code changed, or it is draining)
        _exec_engine()
    _exit_like(code)


def _exec_engine() -> None:
    """Exactly what a process worker runs without this module."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])  # noqa: S606


# ---------------------------------------------------------------------- warm process

def _warm_up() -> None:
    """Import what a run imports, in the engine's order (Prefect first, as
    ``python -m prefect.engine`` does), starting nothing."""
    import importlib

    for name in ("prefect", "prefect.engine", "prefect.flow_engine", "prefect._internal.metrics",
                 "prefect.deployments.steps.core", "prefect.concurrency.sync",
                 "prefect.artifacts", "prefect.futures", "prefect.task_runners"):
        importlib.import_module(name)
    for name in ("flows.backup", "flows.maintenance", "flows.dr_drill"):
        importlib.import_module(name)
    _warm.import_packages(("engine", "repository", "sources", "codec", "storage"))


def warm(fp: str, watch: int) -> dict[str, Any]:
    """The warm process (``vowvault.warm.serve``); in a forked run, the run's request."""
    idle = float(os.environ.get("VOWVAULT_LAUNCHER_IDLE", "900"))
    return _warm.serve(fp, fingerprint(dict(os.environ), os.getcwd(), sys.executable),
                       _warm_up, watch, idle,
                       lambda r: f"flow run {r['env'].get('PREFECT__FLOW_RUN_ID', '?')}")


def become_run(request: dict[str, Any]) -> None:
    """In the forked child: take the client's descriptors, environment and directory, and
    run Prefect's engine as ``python -m prefect.engine`` would."""
    import runpy

    _warm.adopt(request)
    import flows

    flows.offline_defaults()  # what importing flows set in a fresh engine's environment
    engine = sys.modules["prefect.engine"]
    sys.argv = [str(engine.__file__)]
    del sys.modules["prefect.engine"]  # run it as __main__, as `-m` does
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    finally:
        sys.modules.setdefault("prefect.engine", engine)


def _cli(argv: list[str]) -> None:
    if argv[:1] == ["--warm"] and len(argv) == 4 and argv[2] == "--watch":
        request = warm(argv[1], int(argv[3]))
        become_run(request)  # only a forked run gets here
        return
    if argv:
        sys.exit(f"usage: python -m deployments.launcher [--warm FINGERPRINT --watch PID] "
                 f"(got {' '.join(argv)})")
    main()


if __name__ == "__main__":
    _cli(sys.argv[1:])
