"""Point-in-time recovery of a physical policy: the newest base backup before the target,
restored into an empty data directory, the WAL it needs fetched ahead of recovery, the
recovery settings written, and (``start``) the cluster started and watched until the
target is reached.

The postgres user never holds a key: every archived WAL file the recovery may ask for is
opened by this process into a directory beside the data directory first, and
``restore_command`` only copies from there (``vowvault.walspool``, run with the system's
``python3`` from a copy placed in that directory).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vowvault import walspool
from vowvault.catalog import audit
from vowvault.domain import RecoveryType
from vowvault.engine import wal
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.errors import ConfigError, NotFound, RestoreError
from vowvault.sources.physical import lsn_int, server_owner


@dataclass
class Target:
    time: dt.datetime | None = None
    lsn: str | None = None
    xid: str | None = None
    latest: bool = False

    def describe(self) -> str:
        if self.time:
            return f"time {self.time.isoformat()}"
        if self.lsn:
            return f"LSN {self.lsn}"
        if self.xid:
            return f"transaction {self.xid}"
        return "the newest archived WAL"

    def settings(self) -> dict[str, str]:
        if self.time:
            return {"recovery_target_time": self.time.isoformat()}
        if self.lsn:
            return {"recovery_target_lsn": self.lsn}
        if self.xid:
            return {"recovery_target_xid": self.xid}
        return {}


@dataclass
class PitrResult:
    policy: str
    base_backup: str
    datadir: Path
    target: str
    wal_fetched: int
    duration_seconds: float
    started: bool = False
    port: int | None = None
    reached: str | None = None
    """What the server said when it stopped recovery (the log line), when started."""
    validation: dict[str, Any] = field(default_factory=dict)
    erasures_applied: list[dict[str, Any]] = field(default_factory=list)
    """Erasure requests recorded after the base backup, replayed once recovery ended."""
    recovery_id: str | None = None


def restore_to(ctx: Context, policy: str, datadir: Path, target: Target, *,
               start: bool = False, port: int | None = None,
               validation_query: str | None = None, timeout: float = 300.0,
               recovery_type: RecoveryType = RecoveryType.POINT_IN_TIME) -> PitrResult:
    started = time.perf_counter()
    w = wal.window(ctx, policy)
    base = _choose(w, target)
    if datadir.exists() and any(datadir.iterdir()):
        raise ConfigError(f"{datadir} is not empty: a point-in-time restore goes into an empty "
                          f"or new directory")
    prefetch = datadir.parent / f"{datadir.name}.wal"
    if prefetch.exists():
        shutil.rmtree(prefetch)
    erasures = _erasures_after(ctx, base["id"])
    restored = restore_backup(ctx, base["id"], to_dir=datadir, recovery_type=recovery_type,
                              erasures_replayed_by_caller=True)
    start_segment = wal.segno(base.get("start_wal") or "0" * 24)
    every = [n for n in wal.archived_names(ctx, policy)
             if n.endswith(".history") or len(n) != 24 or wal.segno(n) >= start_segment]
    names = every
    if target.time is not None and (start or erasures):
        # Recovery run here: the WAL up to the target first, the rest only if it asks.
        names = wal.needed_until(ctx, policy, every, target.time)
    fetched = wal.fetch_all(ctx, policy, names, prefetch)
    _hand_over(prefetch, datadir)
    _recovery_settings(datadir, prefetch, policy, target)
    result = PitrResult(policy, base["id"], datadir, target.describe(), fetched, 0.0,
                        recovery_id=restored.recovery_id)
    if start or erasures:
        # Erasures recorded after the base backup hold in the recovered cluster too: they
        # are replayed once recovery has ended, so it is started for them if need be.
        result.port = port or free_port()
        try:
            try:
                result.reached = _start_and_wait(datadir, result.port, timeout)
            except _EndedBeforeTarget:
                rest = [n for n in every if n not in set(names)]
                if not rest:
                    raise
                # A segment handed over late: the rest of the archive, and recovery resumes.
                result.wal_fetched += wal.fetch_all(ctx, policy, rest, prefetch)
                names = every
                _hand_over(prefetch, datadir)
                result.reached = _start_and_wait(datadir, result.port, timeout)
        except _EndedBeforeTarget:
            if target.time is None or w.latest is None or target.time > w.latest:
                raise RestoreError(f"recovery reached the end of the archived WAL before "
                                   f"{target.describe()}") from None
            # No commit after the target in WAL that runs unbroken past it: the cluster as
            # it was at the target is the one at the end of that WAL.
            _recovery_settings(datadir, prefetch, policy, Target(latest=True))
            result.reached = ("no transaction committed between the target and the end of "
                              "the archived WAL, which runs unbroken past it: recovered to "
                              "that end, the cluster as it was at the target ("
                              + _start_and_wait(datadir, result.port, timeout) + ")")
        dbname = _dbname(ctx, policy)
        try:
            if erasures:
                result.erasures_applied = _replay(ctx, policy, result.port, erasures)
            if validation_query:
                result.validation = {"query": validation_query, "database": dbname,
                                     "rows": _query(result.port, validation_query, dbname,
                                                    read_only=True)}
        except BaseException:
            stop(datadir)
            raise
        if not start:
            stop(datadir)
            result.port = None
        result.started = start
    result.duration_seconds = round(time.perf_counter() - started, 3)
    org_id = wal.physical_policy(ctx, policy).organization_id
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="restore.pitr", target_type="backup",
                     target_id=base["id"], organization_id=org_id,
                     summary=f"point-in-time restore of {policy} to {target.describe()} from "
                             f"base backup {base['id']} into {datadir}: {fetched} WAL files "
                             f"fetched" + (f"; {result.reached}" if result.reached else "")
                             + (f"; {len(erasures)} erasure request(s) replayed"
                                if erasures else ""))
    return result


def _erasures_after(ctx: Context, base_id: str) -> list[Any]:
    """The erasure requests (with rows) recorded after the base backup."""
    import uuid

    from vowvault.catalog.models import BackupJob
    from vowvault.engine import erasure

    with ctx.catalog.read() as s:
        job = s.get(BackupJob, uuid.UUID(base_id))
        assert job is not None
        return [e for e in erasure.replay_specs(s, job) if e.rows]


def _replay(ctx: Context, policy: str, port: int, erasures: list[Any]) -> list[dict[str, Any]]:
    """Delete the subjects' rows in the recovered cluster, in the database the policy's
    source names (where the requests were made); a failure fails the restore."""
    from psycopg.conninfo import make_conninfo

    from vowvault.sources.postgres import erase_rows

    dsn = make_conninfo(host="127.0.0.1", port=port, user="postgres",
                        dbname=_dbname(ctx, policy), connect_timeout=10)
    try:
        return erase_rows(dsn, erasures)
    except Exception as exc:
        raise RestoreError(f"the recovered cluster came up, but replaying {len(erasures)} "
                           f"erasure request(s) failed: {str(exc).splitlines()[0]}; the "
                           f"cluster is left stopped in its directory") from None


def _choose(w: wal.Window, target: Target) -> dict[str, Any]:
    if not w.bases:
        raise NotFound(f"policy {w.policy} has no completed base backup: run `vowvault backup "
                       f"run {w.policy}` first")
    span = (f"the recoverable window of {w.policy} is {_t(w.earliest)} .. {_t(w.latest)}")
    if target.time is not None:
        when = target.time if target.time.tzinfo else target.time.replace(tzinfo=dt.UTC)
        target.time = when
        if w.earliest and when < w.earliest:
            raise ConfigError(f"--to-time {when.isoformat()} is before the oldest base "
                              f"backup's end: {span}")
        if w.latest and when > w.latest:
            raise ConfigError(f"--to-time {when.isoformat()} is after the newest archived "
                              f"WAL: {span}")
        candidates = [b for b in w.bases if b["completed_at"] <= when <= b["restorable_until"]]
        if not candidates:
            raise ConfigError(f"--to-time {when.isoformat()} falls in a gap of the archived "
                              f"WAL ({'; '.join(w.gaps) or 'no base backup covers it'}): {span}")
        return candidates[-1]
    if target.lsn is not None:
        if not re.match(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$", target.lsn):
            raise ConfigError(f"--to-lsn {target.lsn!r} is not an LSN (such as 0/3000060)")
        wanted = lsn_int(target.lsn.upper())
        candidates = [b for b in w.bases if b.get("stop_lsn") and
                      lsn_int(b["stop_lsn"]) <= wanted]
        if not candidates:
            raise ConfigError(f"--to-lsn {target.lsn} is before the oldest base backup's end "
                              f"({w.bases[0].get('stop_lsn')}): {span}")
        return candidates[-1]
    return w.bases[-1]


def _t(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "?"


def _hand_over(prefetch: Path, datadir: Path) -> None:
    """The fetch command beside the WAL, both readable by the server's user."""
    prefetch.mkdir(parents=True, exist_ok=True)
    command = prefetch / "vowvault-wal"
    shutil.copyfile(walspool.__file__, command)
    command.chmod(0o755)
    owner = server_owner()
    if owner:
        for path in [prefetch, *prefetch.iterdir()]:
            os.chown(path, *owner)


_BLOCK = "# written by vowvault: point-in-time restore"


def _recovery_settings(datadir: Path, prefetch: Path, policy: str, target: Target) -> None:
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin") or "python3"
    settings = {
        "restore_command": f"{python} {prefetch}/vowvault-wal fetch --policy {policy} "
                           f"--from {prefetch} %f %p",
        "recovery_target_timeline": "latest",
        **target.settings(),
    }
    if target.settings():
        settings["recovery_target_action"] = "promote"
    conf = datadir / "postgresql.auto.conf"
    text = conf.read_text() if conf.exists() else ""
    text = text.split(_BLOCK, 1)[0].rstrip("\n")  # a retry replaces what it wrote
    lines = [text, "", _BLOCK]
    lines += [f"{k} = '{v}'" for k, v in settings.items()]
    conf.write_text("\n".join(lines) + "\n")
    (datadir / "recovery.signal").touch()
    owner = server_owner()
    if owner:
        os.chown(datadir / "recovery.signal", *owner)
        os.chown(datadir / "postgresql.auto.conf", *owner)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(cmd: list[str]) -> list[str]:
    """``cmd`` run as the server's user when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if server_owner() else cmd


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15", "14", "13"):
        path = f"/usr/lib/postgresql/{version}/bin/{name}"
        if os.path.exists(path):
            return path
    raise ConfigError(f"{name} is not installed (the PostgreSQL server package)")


def _start_and_wait(datadir: Path, port: int, timeout: float) -> str:
    log_file = datadir / "vowvault-recovery.log"
    socket_dir = datadir
    cmd = as_postgres([pg_bin("pg_ctl"), "-D", str(datadir), "-l", str(log_file), "-w",
                        "-t", str(int(timeout)), "-o",
                        f"-p {port} -c listen_addresses=127.0.0.1 "
                        f"-c unix_socket_directories={socket_dir}", "start"])
    import psycopg

    offset = log_file.stat().st_size if log_file.exists() else 0

    def failed(stderr: str = "") -> RestoreError:
        """Why the server stopped (its FATAL or PANIC line), as the error to raise."""
        text = log_file.read_text(errors="replace")[offset:] if log_file.exists() else ""
        fatal = [ln for ln in text.splitlines() if "FATAL" in ln or "PANIC" in ln]
        if any("recovery ended before configured recovery target was reached" in ln
               for ln in fatal):
            return _EndedBeforeTarget(fatal[-1])
        return RestoreError(f"the restored cluster did not start: "
                            f"{(fatal or [stderr.strip() or 'no message'])[-1]}")

    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise failed(proc.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # A server in recovery answers (hot standby) until recovery ends: promoted, or
        # stopped because it ended before the target.
        try:
            rows = _query(port, "SELECT pg_is_in_recovery()")
        except psycopg.OperationalError:
            if not (datadir / "postmaster.pid").exists():
                raise failed() from None
            rows = []
        if rows and rows[0][0] is False:
            break
        time.sleep(0.2)
    else:
        raise RestoreError(f"the restored cluster is still recovering after {timeout:.0f} s")
    text = log_file.read_text(errors="replace")[offset:]
    reached = [ln.split("LOG:", 1)[-1].strip() for ln in text.splitlines()
               if "recovery stopping" in ln or "archive recovery complete" in ln
               or "redo done at" in ln]
    return reached[0] if reached else "recovery complete"


class _EndedBeforeTarget(RestoreError):
    """PostgreSQL replayed all the WAL it was given without meeting the target."""


def _dbname(ctx: Context, policy: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    source = wal.physical_policy(ctx, policy).source
    return str(conninfo_to_dict(source.get("dsn", "")).get("dbname") or "postgres")


def _query(port: int, sql: str, dbname: str = "postgres", *, read_only: bool = False
           ) -> list[tuple[Any, ...]]:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname,
                             connect_timeout=5, autocommit=not read_only) as conn:
            if read_only:
                conn.execute("SET TRANSACTION READ ONLY")
            rows = list(conn.execute(sql).fetchall())  # type: ignore[arg-type]
            if read_only:
                conn.rollback()
            return rows
    except psycopg.Error as exc:
        if not read_only:
            raise
        raise RestoreError(f"the validation query failed on the recovered cluster: "
                           f"{str(exc).splitlines()[0]}") from None


def stop(datadir: Path) -> None:
    subprocess.run(as_postgres([pg_bin("pg_ctl"), "-D", str(datadir), "-m", "fast", "-w",
                                 "stop"]), capture_output=True)
