"""`vowvault deploy`, `serve`, `drill`: policies as Prefect deployments, and running them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from vowvault.cli import params

_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer, out: Console, err: Console) -> None:
    global _out, _err
    _out, _err = out, err
    from vowvault.cli import helpstyle

    app.command("drill", rich_help_panel=helpstyle.EVERYDAY)(drill)
    app.command("deploy", rich_help_panel=helpstyle.SETUP)(deploy)
    app.command("serve", rich_help_panel=helpstyle.SETUP)(serve)
    app.command("warm", rich_help_panel=helpstyle.SETUP)(warm)


def _prefect() -> None:
    import flows  # noqa: F401 - offline defaults before Prefect loads
    from vowvault.cli.prefect_server import quiet_expected_errors, use_running_server

    use_running_server()
    quiet_expected_errors()


def deploy(
    work_pool: Annotated[str | None, typer.Option(
        help="Deploy into this process work pool (created with its priority queues); "
             "without it, deployments are for `vowvault serve`.")] = None,
) -> None:
    """Make every policy (and the maintenance flows of prefect.yaml) a Prefect deployment.

    Example: `vowvault deploy --work-pool vowvault`
    """
    _prefect()
    import os

    from deployments.backup import deploy as do_deploy
    from vowvault.engine.context import Context

    ctx = Context.from_settings()
    try:
        summary = do_deploy(ctx, work_pool, env=deployment_env(os.environ, ctx.settings.home))
    finally:
        ctx.close()
    for created in summary.created:
        _out.print(f"  created {created}")
    for name in summary.deployments:
        _out.print(f"  deployment {name}" + ("  (paused: policy deactivated)"
                                             if name in summary.paused else ""))
    _out.print(f"  concurrency limits: {', '.join(summary.limits) or '-'}")
    where = f"work pool {work_pool}" if work_pool else "`vowvault serve`"
    _out.print(f"{len(summary.deployments)} deployments for {where}")


def serve() -> None:
    """Run every deployment's schedule in this process (single machine); Ctrl-C stops.
    Without PREFECT_API_URL, a local Prefect server (with its UI) is started too.

    Example: `vowvault serve`
    """
    import os

    import flows  # noqa: F401
    from vowvault.cli import prefect_server

    server = None
    if not prefect_server.use_running_server():
        server = prefect_server.start_local_server()
        ui = os.environ["PREFECT_API_URL"].removesuffix("/api")
        _out.print(f"started a local Prefect server: UI at {ui} (stops with this command)")
    _prefect()
    from deployments.backup import serve as do_serve
    from vowvault.engine.context import Context

    ctx = Context.from_settings()
    try:
        do_serve(ctx)
    finally:
        ctx.close()
        if server is not None:
            prefect_server.stop_local_server(server)


def warm(
    stop: Annotated[bool, typer.Option("--stop", help="End this environment's warm process "
                                                      "(commands in progress finish first).")]
    = False,
    idle: Annotated[float, typer.Option("--idle", metavar="SECONDS", min=1,
                                        help="End it after this long without a command.")]
    = 900.0,
) -> None:
    """Keep a warm process for this environment: later commands in the same environment
    fork from it instead of importing everything again (about a tenth of a second of
    start-up instead of about one). Any change of environment variable, process context
    (umask, limits, groups), interpreter or installed code makes commands start cold again,
    as they would without it.

    Example: `vowvault warm`
    """
    import os
    import signal
    import time

    from vowvault import warm as w
    from vowvault.errors import ConfigError

    where = w.runtime_dir()
    if where is None:
        raise ConfigError("no private runtime directory ($XDG_RUNTIME_DIR/vowvault or "
                          "/tmp/vowvault-UID, yours, mode 0700): commands start cold")
    fp = w.cli_fingerprint()
    pid = w.cli_warm_pid(where, fp)
    if stop:
        if pid is None:
            _out.print("no warm process runs for this environment")
            return
        os.kill(pid, signal.SIGTERM)
        _out.print(f"warm process {pid} stops (commands in progress finish first)")
        return
    if pid is not None:
        _out.print(f"a warm process runs for this environment (pid {pid}); "
                   f"`vowvault warm --stop` ends it")
        return
    if w.live_warm(where) >= w.MAX_WARM:
        raise ConfigError(f"{w.MAX_WARM} warm processes run already (other environments): "
                          f"stop one with `vowvault warm --stop` in its environment")
    started = time.monotonic()
    w.start_cli_warm(where, fp, w.command_env(), idle=idle)
    sock = where / f"{fp}.sock"
    while not sock.exists():
        if time.monotonic() - started > 60:
            raise ConfigError(f"the warm process did not start: see {where / (fp + '.log')}")
        time.sleep(0.05)
    _out.print(f"warm process {w.cli_warm_pid(where, fp)} ready in "
               f"{time.monotonic() - started:.1f} s: commands in this environment fork from "
               f"it until it is idle for {idle:.0f} s (`vowvault warm --stop` ends it)")


def run_via_deployment(policy: str, timeout: float) -> dict[str, Any]:
    """Trigger the policy's deployment and wait for its run; the result as recorded."""
    import flows  # noqa: F401 - offline defaults before Prefect loads
    from vowvault.cli.prefect_server import quiet_expected_errors, use_running_server
    from vowvault.errors import ConfigError, NotFound

    api = use_running_server()
    if api is None:
        raise ConfigError("--via-deployment needs a Prefect server that has the policy's "
                          "deployment: run `vowvault serve` (or `vowvault deploy` against "
                          "PREFECT_API_URL), or drop --via-deployment")
    quiet_expected_errors()
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = run_deployment(f"backup/{policy}", parameters={"policy": policy},
                             timeout=timeout)
    except ObjectNotFound:
        raise NotFound(f"no deployment backup/{policy} on {api}: run `vowvault deploy` "
                       f"there first (or check the policy name)") from None
    from vowvault.engine import queries
    from vowvault.engine.context import Context

    ctx = Context.from_settings()
    try:
        return queries.backup_of_flow_run(ctx, str(run.id),
                                          run.state.name if run.state else None)
    finally:
        ctx.close()


def drill(
    policy: Annotated[str, typer.Argument(help="Policy whose backup to restore.")],
    backup: Annotated[str, typer.Option(
        help='Which backup: "latest" verified, "random:N" (a random verified one of the '
             'last N days), or a backup id.')] = "latest",
    drill_server: Annotated[str | None, typer.Option(
        help="PostgreSQL server for the throw-away database (default: the source's).")]
    = None,
    wait_archive: Annotated[float, typer.Option(
        "--wait-archive", metavar="SECONDS",
        help="Seconds to wait for archived data to be restored first.",
        callback=params.seconds)] = 0.0,
    archive_wait: Annotated[float | None, typer.Option("--archive-wait", hidden=True,
                                                       callback=params.seconds)] = None,
) -> None:
    """Restore a backup into a scratch target, validate it, time it against the policy's
    RTO target, clean up. Exit 1 if it missed.

    Example: `vowvault drill grand-hall-db --backup random:30`
    """
    from vowvault.engine.context import Context
    from vowvault.engine.drill import run_drill

    if archive_wait is not None:  # the old spelling, one release
        wait_archive = archive_wait
    ctx = Context.from_settings()
    try:
        r = run_drill(ctx, policy, backup, drill_server, wait_archive)
    finally:
        ctx.close()
    verdict = f"RTO target {r.rto_target_seconds} s: {'met' if r.passed else 'MISSED'}"
    if "target" in r.validation:  # a point-in-time drill
        _out.print(f"drill of {policy}: recovered to {r.validation['target']} from base "
                   f"backup {r.backup_id[:8]} and validated in {r.rto_seconds:.1f} s "
                   f"({verdict}); RPO {r.rpo_seconds:.0f} s (the archive's lag when the "
                   f"drill started)", markup=False)
        _out.print(f"  {r.validation.get('reached')}", markup=False)
        for row in r.validation.get("rows", []):
            _out.print("  " + " | ".join(str(v) for v in row), markup=False)
    else:
        _out.print(f"drill of {policy}: backup {r.backup_id} restored and validated in "
                   f"{r.rto_seconds:.1f} s ({verdict}); backup age "
                   f"{r.rpo_seconds / 3600:.1f} h", markup=False)
    if not r.passed:
        raise typer.Exit(1)


# What the workers need to find the catalog and the key directory, and nothing else: job
# variables are shown in the Prefect UI, so no key, password or credential may go there.
DEPLOYMENT_ENV = ("VOWVAULT_HOME", "VOWVAULT_DATABASE_URL", "VOWVAULT_LOG_LEVEL")


def deployment_env(environ: Any, home: Any) -> dict[str, str]:
    from urllib.parse import urlsplit

    env = {k: environ[k] for k in DEPLOYMENT_ENV if environ.get(k)}
    url = env.get("VOWVAULT_DATABASE_URL")
    if url and urlsplit(url).password:
        raise typer.BadParameter("VOWVAULT_DATABASE_URL carries a password, which would be "
                                 "shown in every deployment: use ~/.pgpass or PGPASSFILE on "
                                 "the workers instead")
    if not url:
        # The embedded catalog is a file in this VOWVAULT_HOME: runs must use this one. With
        # PostgreSQL, workers on other machines keep their own unless the shell named one.
        env.setdefault("VOWVAULT_HOME", str(home))
    return env
