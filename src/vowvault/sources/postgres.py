"""PostgreSQL logical backups: ``pg_dump -Fc -Z0`` streamed, ``pg_restore`` fed back.

The custom format with compression off: vowvault compresses frames itself (zstd is
several times faster than pg_dump's zlib), the archive streams to stdout, and ``pg_restore``
can select, clean and re-own objects at restore time. While the archive streams, a tap
(``pgarchive.ArchiveTap``) counts each table's rows and hashes its COPY data, so that a
restore can be validated table by table without querying the source again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from vowvault.errors import ConfigError, RestoreError, SourceError

READ_CHUNK = 1 << 20


def redact(dsn: str) -> str:
    """A DSN safe to print and store: host, port, database, user; never a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable connection string>"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname', '')}"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} is not installed or not on PATH (install the PostgreSQL "
                          f"client, e.g. apt install postgresql-client)")
    return path


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() or "fatal" in ln.lower():
            return ln.removeprefix("pg_dump: ").removeprefix("pg_restore: ")
    return lines[0] if lines else "no message"


@dataclass
class PostgresSource:
    dsn: str
    password: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", "10")
        return env

    def describe(self) -> dict[str, Any]:
        """Connect once before dumping: fail fast with a clear message, and record what a
        restore needs (server version, encoding, timezone) and the size for progress."""
        import psycopg

        from vowvault.sources.pgarchive import session_settings

        try:
            with psycopg.connect(self.dsn, password=self.password, connect_timeout=10,
                                 autocommit=True) as conn:
                row = conn.execute(
                    "SELECT current_database(), pg_database_size(current_database()), "
                    "current_setting('server_version')").fetchone()
                assert row is not None
                settings = session_settings(conn)
        except psycopg.OperationalError as exc:
            raise SourceError(f"cannot connect to {redact(self.dsn)}: "
                              f"{_pg_message(exc)}") from None
        self.info = {"database": row[0], "size_bytes": int(row[1]),
                     "server_version": row[2], "settings": settings,
                     "address": redact(self.dsn)}
        return self.info

    @contextlib.contextmanager
    def dump(self) -> Iterator[Iterator[bytes]]:
        """The archive as a stream of chunks. The stream raises ``SourceError`` at its end
        if pg_dump failed, so a dump cut short is never taken for a complete one."""
        cmd = [_tool("pg_dump"), "--format=custom", "--compress=0", "--no-password",
               f"--dbname={self.dsn}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env())
        stderr = _Drain(proc.stderr)
        try:
            yield self._stream(proc, stderr)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            stderr.join()

    def _stream(self, proc: subprocess.Popen[bytes], stderr: _Drain) -> Iterator[bytes]:
        assert proc.stdout is not None
        out = proc.stdout
        while True:
            chunk = out.read1(READ_CHUNK)
            if not chunk:
                break
            yield chunk
        rc = proc.wait()
        stderr.join()
        if rc != 0:
            raise SourceError(f"pg_dump of {redact(self.dsn)} failed (exit {rc}): "
                              f"{_first_error(stderr.text)}")


class _Drain(threading.Thread):
    """Reads a pipe to its end in the background (a full stderr pipe would stall the
    child), keeping the last 64 KiB for error messages."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self._buf = bytearray()
        self.start()

    def run(self) -> None:
        if self.pipe is None:
            return
        for line in self.pipe:
            self._buf += line
            if len(self._buf) > 65536:
                del self._buf[:-65536]

    @property
    def text(self) -> str:
        return self._buf.decode("utf-8", "replace")


def _pg_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "FATAL" in line or "error" in line.lower():
            return line.split("FATAL:", 1)[-1].strip()
    return text[-1] if text else exc.__class__.__name__


def check_archive(chunks: Iterable[bytes]) -> None:
    """Feed a whole archive to ``pg_restore -f /dev/null``: proves PostgreSQL's own tool
    reads every entry of it."""
    error = _pg_restore([_tool("pg_restore"), "--file=/dev/null"], chunks, None)
    if error is not None:
        from vowvault.errors import IntegrityError

        raise IntegrityError(f"pg_restore rejects the archive: {error}")


def _pg_restore(cmd: list[str], chunks: Iterable[bytes], env: dict[str, str] | None
                ) -> str | None:
    """Stream the archive into a pg_restore command; its first error, or None."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    stderr = _Drain(proc.stderr)
    _feed(proc, chunks, "pg_restore")
    rc = proc.wait()
    stderr.join()
    return _first_error(stderr.text) if rc != 0 else None


def _feed(proc: subprocess.Popen[bytes], chunks: Iterable[bytes], tool: str) -> None:
    assert proc.stdin is not None
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the tool stopped reading: its exit status and stderr say why
    except BaseException:
        proc.kill()
        raise


def target_state(dsn: str, password: str | None = None) -> tuple[bool, int]:
    """(database exists, number of user tables in it)."""
    import psycopg

    try:
        with psycopg.connect(dsn, password=password, connect_timeout=10,
                             autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%%'").fetchone()
            return True, int(row[0]) if row else 0
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            return False, 0
        raise RestoreError(f"cannot connect to {redact(dsn)}: {_pg_message(exc)}") from None


def create_database(dsn: str, password: str | None = None) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(dsn)
    name = info.get("dbname")
    maintenance = make_conninfo(dsn, dbname="postgres")
    try:
        with psycopg.connect(maintenance, password=password, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(name))))
    except psycopg.Error as exc:
        raise RestoreError(f"cannot create database {name} on {redact(dsn)}: "
                           f"{_pg_message(exc)}") from None


def restore(dsn: str, chunks: Iterable[bytes], *, password: str | None = None,
            clean: bool = False, keep_owners: bool = False) -> None:
    """Stream an archive into ``pg_restore`` against ``dsn``."""
    # One transaction: the tables are created in it, so COPY skips the free-space map
    # (TABLE_INSERT_SKIP_FSM) and rows land in the dump's order, which the per-table
    # checksums depend on (measured on the 1 GiB benchmark: without it, tables of varying
    # row widths came back in another order and failed validation). A failed restore also
    # leaves nothing half-loaded.
    cmd = [_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-password",
           f"--dbname={dsn}"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    if not keep_owners:
        cmd += ["--no-owner", "--no-privileges"]
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    error = _pg_restore(cmd, chunks, env)
    if error is not None:
        raise RestoreError(f"pg_restore into {redact(dsn)} failed: {error}")
