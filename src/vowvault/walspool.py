"""The WAL spool: all that PostgreSQL's ``archive_command`` and ``restore_command`` do.

PostgreSQL runs ``archive_command`` once per 16 MiB segment, as its own OS user, and waits
for it; a command that imported the catalog, the keys and a cloud SDK would pay over a
second per segment and hand the postgres user the keys. So ``vowvault wal push`` only
copies the segment into a local spool (write to a temporary name, fsync, link to its own
name, fsync the directory: a crash leaves either nothing or the whole segment), and the
archiver (``vowvault wal archiver``, the service user, holding keys and catalog) seals,
uploads and records what the spool holds, then leaves a 64-byte receipt and removes the
segment. ``vowvault wal fetch`` likewise only copies a segment from a directory the
restoring vowvault process filled ahead of recovery.

Pushing is idempotent and never overwrites: the same segment again (PostgreSQL retries a
push whose answer it did not see) succeeds, whether it is still spooled or already
archived; different bytes under a name already spooled or archived fail loudly and leave
both as they are.

Standard library only, and a script of its own: the fast path of the ``vowvault`` command
(``vowvault.cli.entry``) runs it, and ``vowvault wal install-command DIR`` copies it where
the postgres user can run it with the system's ``python3`` (a database server needs
neither vowvault's virtualenv nor its keys)::

    archive_command = '/usr/local/lib/vowvault/vowvault-wal push --policy NAME %p'
    restore_command = '/usr/local/lib/vowvault/vowvault-wal fetch --policy NAME --from DIR %f %p'
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

SPOOL_ENV = "VOWVAULT_WAL_SPOOL"
RECEIPTS = ".archived"
"""Per policy spool, the receipts of archived segments: ``<name>`` holding its SHA-256."""
CHUNK = 1 << 20

WAL_NAME = re.compile(r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|"
                      r"[0-9A-F]{8}\.history)$")
"""A segment (timeline, log, segment), a partial segment, a backup history file, or a
timeline history file: the only names PostgreSQL archives."""
POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class SpoolError(Exception):
    """A push or fetch that cannot be done; the message says why (one line)."""


class SpoolConflict(SpoolError):
    """Different bytes under a name already spooled or archived: never overwritten."""


def check_name(name: str) -> str:
    if not WAL_NAME.match(name):
        raise SpoolError(f"{name!r} is not a WAL file name (a segment such as "
                         f"000000010000000000000001, or a .history, .partial or .backup file)")
    return name


def check_policy(policy: str) -> str:
    if not POLICY_NAME.match(policy):
        raise SpoolError(f"{policy!r} is not a policy name")
    return policy


def spool_root(spool: str | os.PathLike[str] | None = None) -> Path:
    """``--spool``, else ``$VOWVAULT_WAL_SPOOL``, else ``$VOWVAULT_HOME/wal-spool``."""
    if spool:
        return Path(spool)
    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV])
    home = os.environ.get("VOWVAULT_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".vowvault")
    return Path(home) / "wal-spool"


def policy_spool(policy: str, spool: str | os.PathLike[str] | None = None) -> Path:
    return spool_root(spool) / check_policy(policy)


def push(policy: str, path: str | os.PathLike[str],
         spool: str | os.PathLike[str] | None = None) -> str:
    """Spool one WAL file; returns what happened ("spooled", "already spooled", "already
    archived")."""
    source = Path(path)
    name = check_name(source.name)
    directory = policy_spool(policy, spool)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpoolError(f"cannot create the spool {directory}: {exc.strerror}") from None
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            os.fchmod(dst.fileno(), 0o640)  # the archiver may be another user of the group
            for chunk in iter(lambda: src.read(CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        tmp.unlink(missing_ok=True)
        raise SpoolError(f"{source}: no such file") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SpoolError(f"cannot spool {name} into {directory}: {exc.strerror}") from None
    sha = digest.hexdigest()
    try:
        receipt = _receipt(directory, name)
        if receipt is not None:
            if receipt != sha:
                raise SpoolConflict(f"{name} was archived with other contents (SHA-256 "
                                    f"{receipt[:12]}..., now {sha[:12]}...): not overwritten")
            return "already archived"
        try:
            os.link(tmp, directory / name)
        except FileExistsError:
            if file_sha256(directory / name) != sha:
                raise SpoolConflict(f"{name} is already spooled with other contents: not "
                                    f"overwritten") from None
            return "already spooled"
        _fsync_dir(directory)
        return "spooled"
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, destination: str | os.PathLike[str], source_dir: str | os.PathLike[str]
          ) -> bool:
    """Copy ``name`` from ``source_dir`` to ``destination`` (a temporary name, then a
    rename); False if the directory does not hold it (PostgreSQL then ends recovery or
    tries its pg_wal)."""
    check_name(name)
    source = Path(source_dir) / name
    dest = Path(destination)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        tmp.unlink(missing_ok=True)
        if not source.parent.is_dir():
            raise SpoolError(f"{source.parent}: no such directory") from None
        return False
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SpoolError(f"cannot fetch {name}: {exc.strerror}") from None
    os.replace(tmp, dest)
    return True


def spooled(policy: str, spool: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """The WAL files waiting in a policy's spool, oldest first (history files before the
    segments of their timeline, as PostgreSQL archives them)."""
    directory = policy_spool(policy, spool)
    try:
        names = [e.name for e in os.scandir(directory) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for name in sorted((n for n in names if WAL_NAME.match(n)), key=_order):
        yield directory / name


def receipt_written(directory: Path, name: str, sha: str) -> None:
    """After a segment is archived on every copy and recorded: its receipt, then the
    segment goes from the spool."""
    receipts = directory / RECEIPTS
    receipts.mkdir(exist_ok=True)
    tmp = receipts / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(sha)
    os.replace(tmp, receipts / name)
    (directory / name).unlink(missing_ok=True)
    _fsync_dir(directory)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _receipt(directory: Path, name: str) -> str | None:
    try:
        return (directory / RECEIPTS / name).read_text().strip()
    except FileNotFoundError:
        return None


def _order(name: str) -> tuple[str, int, str]:
    if name.endswith(".history"):
        return (name[:8], 0, name)
    return (name[:8], 1, name)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the command -----------------------------------------------------------------------------

_OPTIONS = ("--policy", "--spool", "--from")


def main(argv: list[str] | None = None) -> int:
    """``push --policy NAME [--spool DIR] PATH`` or ``fetch --policy NAME --from DIR NAME
    DEST``: 0 done, 1 not done (PostgreSQL tries again later, or ends recovery), 2 misuse."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    verb, args = (args[0], args[1:]) if args else ("", [])
    if verb not in ("push", "fetch"):
        return _usage(verb or "?", "say push or fetch")
    options: dict[str, str] = {}
    positional: list[str] = []
    rest = iter(args)
    for arg in rest:
        key, eq, value = arg.partition("=")
        if key in _OPTIONS:
            found = value if eq else next(rest, None)
            if found is None:
                return _usage(verb, f"{arg} needs a value")
            options[key[2:]] = found
        elif arg.startswith("-") and arg != "-":
            return _usage(verb, f"unknown option {arg}")
        else:
            positional.append(arg)
    if "policy" not in options:
        return _usage(verb, "--policy NAME is required")
    try:
        if verb == "push":
            if len(positional) != 1:
                return _usage(verb, "give the WAL file's path (%p)")
            push(options["policy"], positional[0], options.get("spool"))
            return 0
        if len(positional) != 2 or "from" not in options:
            return _usage(verb, "give --from DIR, the WAL file's name (%f) and where to write "
                                "it (%p)")
        return 0 if fetch(positional[0], positional[1], options["from"]) else 1
    except SpoolError as exc:
        print(f"vowvault: error: wal {verb}: {exc}", file=sys.stderr)
        return 1


def _usage(verb: str, problem: str) -> int:
    import sys

    example = ("push --policy NAME [--spool DIR] %p" if verb == "push" else
               "fetch --policy NAME --from DIR %f %p")
    print(f"vowvault: error: wal {verb}: {problem} (usage: vowvault wal {example})",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
