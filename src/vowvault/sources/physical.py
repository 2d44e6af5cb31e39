"""PostgreSQL physical backups, both directions: a base backup of the whole cluster over
the replication protocol, and its restore into a data directory (then, with archived WAL,
to a point in time: ``vowvault.engine.pitr``).

``pg_basebackup -D - -Ft -X fetch`` streams the cluster as one tar, with the WAL from the
backup's start to its end inside it (``pg_wal/``) and PostgreSQL's ``backup_manifest``
last: each base backup restores to a consistent cluster on its own, archive or not. While
the tar streams, every file is checked against the manifest (size and CRC-32C, which the
server computes almost for free where SHA-256 costs it a core-second per GiB; the
manifest's own SHA-256 too), so a stream damaged on the way is never recorded; verify and
restore check the stored tar the same way. The object's SHA-256 and every frame's tag
guard the stored bytes; the per-file CRC proves the tar is the server's. Base backups
taken with SHA-256 manifests (``file_checksums`` absent from the source info) are checked
with SHA-256. Start and stop LSN, timeline and times come
from ``backup_label`` and the manifest's WAL range.

One tablespace only (pg_basebackup cannot stream more to stdout); the restored directory is
owned by the ``postgres`` user when restored as root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vowvault.errors import ConfigError, IntegrityError, RestoreError, SourceError, TargetInTheWay
from vowvault.repository.layout import DATA
from vowvault.repository.reader import BackupReader
from vowvault.repository.tree import Entry
from vowvault.sources.base import (
    ErasureSpec,
    Progress,
    RestoreOutcome,
    RestoreTarget,
    Snapshot,
    SnapshotRequest,
    SourceDriver,
    no_progress,
    redact,
)
from vowvault.sources.postgres import (
    Drain,
    PostgresSource,
    first_error,
    pg_message,
    tool,
    widen_pipe,
)
from vowvault.sources.tarstream import members
from vowvault.sources.treewriter import INCOMPLETE, TreeWriter

_LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


def lsn_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


FILE_CHECKSUMS = "CRC32C"
"""What ``pg_basebackup`` is asked to put in the manifest of a new base backup."""


class Checked:
    """What one pass over a base backup's tar proved: every file the manifest lists is
    there with its size and checksum (``algorithm``: CRC32C, or SHA256 for base backups
    taken so), and nothing else but the WAL of ``pg_wal/``."""

    def __init__(self, algorithm: str = FILE_CHECKSUMS) -> None:
        if algorithm not in _DIGESTS:
            raise IntegrityError(f"base backup files carry {algorithm!r} checksums, which "
                                 f"this vowvault cannot check")
        self.algorithm = algorithm
        self.files: dict[str, tuple[int, str]] = {}
        self.label = ""
        self.manifest: dict[str, Any] = {}
        self.bytes = 0

    def see(self, name: str, size: int, sha: str, data: bytes | None) -> None:
        self.files[name] = (size, sha)
        self.bytes += size
        if name == "backup_label" and data is not None:
            self.label = data.decode("utf-8", "replace")
        if name == "backup_manifest" and data is not None:
            self.manifest = _manifest(data)

    def prove(self) -> dict[str, Any]:
        if not self.manifest:
            raise IntegrityError("the base backup holds no backup_manifest")
        listed = {f["Path"]: f for f in self.manifest["Files"]}
        for path, f in listed.items():
            found = self.files.get(path)
            if found is None:
                raise IntegrityError(f"base backup lacks {path}, which its manifest lists")
            if found[0] != f["Size"]:
                raise IntegrityError(f"{path} is {found[0]} bytes; the manifest says {f['Size']}")
            if f.get("Checksum-Algorithm") != self.algorithm:
                raise IntegrityError(f"{path} carries a {f.get('Checksum-Algorithm')} "
                                     f"checksum in the manifest, not {self.algorithm}")
            if found[1] != f["Checksum"]:
                raise IntegrityError(f"{path} does not match its {self.algorithm} checksum "
                                     f"in the manifest")
        extra = [p for p in self.files if p not in listed and p != "backup_manifest"
                 and not p.startswith("pg_wal/")]
        if extra:
            raise IntegrityError(f"base backup holds {extra[0]}, which its manifest does not "
                                 f"list")
        (wal,) = self.manifest["WAL-Ranges"][:1] or [None]
        if wal is None:
            raise IntegrityError("the base backup's manifest has no WAL range")
        label = dict(line.split(": ", 1) for line in self.label.splitlines() if ": " in line)
        started = label.get("START TIME", "")
        return {"timeline": int(wal["Timeline"]), "start_lsn": wal["Start-LSN"],
                "stop_lsn": wal["End-LSN"], "start_time": started,
                "start_wal": label.get("START WAL LOCATION", "").split("file ")[-1].rstrip(")"),
                "files": len(listed), "wal_files": sum(p.startswith("pg_wal/0")
                                                       for p in self.files)}


def _manifest(raw: bytes) -> dict[str, Any]:
    """PostgreSQL's backup_manifest, its own checksum checked (SHA-256 of everything before
    the ``"Manifest-Checksum"`` line)."""
    cut = raw.rfind(b'"Manifest-Checksum"')
    try:
        doc = json.loads(raw)
    except ValueError:
        raise IntegrityError("backup_manifest is not JSON") from None
    if cut < 0 or hashlib.sha256(raw[:cut]).hexdigest() != doc.get("Manifest-Checksum"):
        raise IntegrityError("backup_manifest does not match its own checksum")
    return doc  # type: ignore[no-any-return]


def walk(chunks: Iterable[bytes], checked: Checked,
         on_member: Any = None) -> None:
    """Hash every member of a base backup's tar (and hand it to ``on_member``)."""
    for member, body in members(chunks):
        if member.type != "file":
            if on_member is not None:
                on_member(member, iter(()))
            continue
        keep = member.name in ("backup_label", "backup_manifest")
        stream = _Hashed(body, keep, checked.algorithm)
        if on_member is not None:
            on_member(member, iter(stream))
        for _ in stream:  # whatever the consumer did not read
            pass
        checked.see(member.name, member.size, stream.digest.hexdigest(),
                    bytes(stream.kept) if keep else None)


class _Crc32c:
    """CRC-32C as PostgreSQL's manifest spells it: the four bytes in little-endian order,
    in hex (google-crc32c's C implementation: about 4 GiB/s)."""

    def __init__(self) -> None:
        import google_crc32c

        self._crc = google_crc32c.Checksum()

    def update(self, data: bytes | memoryview) -> None:
        # Its C extension takes bytes only (a view is copied: about 0.1 s per GiB).
        self._crc.update(data if type(data) is bytes else bytes(data))

    def hexdigest(self) -> str:
        return int.from_bytes(self._crc.digest(), "big").to_bytes(4, "little").hex()


_DIGESTS: dict[str, Any] = {"CRC32C": _Crc32c, "SHA256": hashlib.sha256}


class _Hashed:
    """A member's bytes, hashed as they are read (and kept, for the small ones)."""

    def __init__(self, body: Iterator[bytes], keep: bool, algorithm: str) -> None:
        self.body, self.keep = body, keep
        self.digest = _DIGESTS[algorithm]()
        self.kept = bytearray()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        piece = next(self.body)
        self.digest.update(piece)
        if self.keep:
            self.kept.extend(piece)
        return piece


class BaseBackupSnapshot(Snapshot):
    """The ``data`` stream of a physical backup: pg_basebackup's tar, proved against its
    manifest as it goes by."""

    def __init__(self, request: SnapshotRequest) -> None:
        super().__init__()
        self.request = request

    def streams(self) -> Iterator[tuple[str, Iterable[bytes]]]:
        source = PostgresSource(self.request.config["dsn"], self.request.password)
        info = describe_cluster(source)
        cmd = [tool("pg_basebackup"), f"--dbname={source.dsn}", "--pgdata=-", "--format=tar",
               "--wal-method=fetch", "--checkpoint=fast",
               f"--manifest-checksums={FILE_CHECKSUMS}",
               "--no-password", "--label=vowvault"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=source.env())
        widen_pipe(proc.stdout)
        stderr = Drain(proc.stderr)
        try:
            yield DATA, self._tapped(proc, stderr, source, info)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            stderr.join()

    def _tapped(self, proc: subprocess.Popen[bytes], stderr: Drain, source: PostgresSource,
                info: dict[str, Any]) -> Iterator[bytes]:
        import queue
        import threading

        assert proc.stdout is not None
        feed: queue.Queue[bytes | None] = queue.Queue(64)
        checked = Checked()
        failure: list[BaseException] = []

        def check() -> None:
            try:
                walk(iter(feed.get, None), checked)
            except BaseException as exc:  # reported when the stream ends
                failure.append(exc)
                while feed.get() is not None:  # keep the producer moving
                    pass

        checker = threading.Thread(target=check, daemon=True, name="vowvault-basebackup")
        checker.start()
        done, total = 0, info["size_bytes"]
        try:
            while True:
                chunk = proc.stdout.read1(1 << 20)
                if not chunk:
                    break
                feed.put(chunk)
                done += len(chunk)
                self.request.progress("base backup", done, total)
                yield chunk
        finally:
            feed.put(None)
            checker.join()
        rc = proc.wait()
        stderr.join()
        if rc != 0:
            raise SourceError(f"pg_basebackup of {redact(source.dsn)} failed (exit {rc}): "
                              f"{first_error(stderr.text.replace('pg_basebackup: ', ''))}")
        if failure:
            raise SourceError(f"the base backup of {redact(source.dsn)} does not prove "
                              f"itself: {failure[0]}")
        proved = checked.prove()
        self.info = {"kind": "postgres-physical", **info, **proved,
                     "file_checksums": checked.algorithm,
                     "stop_time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                     "bytes": checked.bytes}


def describe_cluster(source: PostgresSource) -> dict[str, Any]:
    """Connect once first: a clear message if it cannot work, and what a restore needs."""
    import psycopg

    try:
        with psycopg.connect(source.dsn, password=source.password, connect_timeout=10,
                             autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT system_identifier::text FROM pg_control_system()), "
                "(SELECT sum(pg_database_size(oid))::bigint FROM pg_database), "
                "current_setting('archive_mode'), current_setting('wal_level'), "
                "pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        raise SourceError(f"cannot connect to {redact(source.dsn)}: {pg_message(exc)}"
                          ) from None
    assert row is not None
    if row[4] == "minimal":
        raise ConfigError(f"{redact(source.dsn)} has wal_level = minimal: a physical backup "
                          f"needs replica (set it and restart the server)")
    return {"server_version": row[0], "system_identifier": row[1],
            "size_bytes": int(row[2] or 0), "archive_mode": row[3],
            "address": redact(source.dsn)}


def server_owner() -> tuple[int, int] | None:
    """Who a restored data directory belongs to: the ``postgres`` user, when restoring as
    root (PostgreSQL refuses a data directory it does not own)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def file_checksums(reader: BackupReader) -> str:
    """The algorithm of a stored base backup's manifest checksums."""
    return str(reader.manifest.source.get("file_checksums", "SHA256"))


def extract(chunks: Iterable[bytes], directory: Path, note: str,
            progress: Progress = no_progress, total: int | None = None,
            algorithm: str = FILE_CHECKSUMS) -> dict[str, Any]:
    """Write a base backup's tar into an empty ``directory`` (through ``TreeWriter``: no
    symlink followed, nothing outside it), proving every file on the way; the proof."""
    if directory.exists() and any(p.name != INCOMPLETE for p in directory.iterdir()):
        raise TargetInTheWay(f"{directory} is not empty: a data directory is restored into an "
                             f"empty or new directory")
    owner = server_owner()
    uid, gid = owner or (os.getuid(), os.getgid())
    writer = TreeWriter(directory, preserve_owners=owner is not None, note=note)
    checked = Checked(algorithm)
    done = 0

    def counted(body: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal done
        for piece in body:
            done += len(piece)
            progress("restore", done, total)
            yield piece

    def place(member: Any, body: Iterator[bytes]) -> None:
        if member.name == "backup_manifest":
            return  # proved, kept in the backup; not part of a data directory
        if member.type == "symlink":
            raise RestoreError(f"the base backup holds a symlink ({member.name}): tablespaces "
                               f"are not restored by this vowvault")
        entry = Entry(path=member.name, type=member.type,
                      mode=(0o40000 if member.type == "dir" else 0o100000) | member.mode,
                      uid=uid, gid=gid, mtime_ns=member.mtime * 1_000_000_000,
                      size=member.size)
        writer.add(entry, counted(body) if member.type == "file" else None)

    try:
        writer.add(Entry(path="", type="dir", mode=0o40700, uid=uid, gid=gid,
                         mtime_ns=0))
        walk(chunks, checked, place)
        proof = checked.prove()
        writer.finish()
    except BaseException as exc:
        writer.fail(exc, clear=True)
        if isinstance(exc, OSError):
            raise RestoreError(f"cannot write under {directory}: {exc.strerror or exc}"
                               ) from None
        raise
    os.chmod(directory, 0o700)
    return {"files": proof["files"], "checked": True, "checksum_per_file": algorithm,
            "timeline": proof["timeline"], "stop_lsn": proof["stop_lsn"], "bytes": done}


class PostgresPhysicalDriver(SourceDriver):
    name = "postgres-physical"
    objects = (DATA,)
    proved_in_stream = True

    def snapshot(self, request: SnapshotRequest) -> Snapshot:
        return BaseBackupSnapshot(request)

    def check(self, reader: BackupReader, *, deep: bool) -> set[str]:
        """Every file of the stored tar against PostgreSQL's manifest (size, checksum)."""
        checked = Checked(file_checksums(reader))
        walk(reader.stream(DATA), checked)
        checked.prove()
        return {DATA}

    def restore(self, reader: BackupReader, references: dict[str, BackupReader],
                target: RestoreTarget, erasures: list[ErasureSpec],
                progress: Progress = no_progress) -> RestoreOutcome:
        if target.directory is None:
            raise ConfigError(f"backup {reader.backup_id} is a physical base backup: restore "
                              f"it with --to-datadir DIR")
        if any(e.rows or e.paths for e in erasures):
            raise RestoreError(
                f"backup {reader.backup_id} predates {len(erasures)} erasure request(s) of its "
                f"organization, and this vowvault cannot yet replay erasures on a restored "
                f"cluster: nothing is restored (restore a logical backup, which replays them, "
                f"or take a new base backup)")
        validation = extract(reader.stream(DATA), target.directory,
                             f"restore of base backup {reader.backup_id} in progress",
                             progress, reader.entry(DATA).plaintext_size,
                             file_checksums(reader))
        return RestoreOutcome(validation["bytes"], validation, [])

    @contextlib.contextmanager
    def scratch(self, config: dict[str, Any],
                server: str | None = None) -> Iterator[RestoreTarget]:
        import shutil

        tmp = Path(tempfile.mkdtemp(prefix="vowvault-drill-"))
        owner = server_owner()
        if owner:
            os.chown(tmp, *owner)
        try:
            yield RestoreTarget(directory=tmp / "pgdata")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def wal_segment_of(lsn: str, timeline: int, segment_size: int = 16 << 20) -> str:
    """The name of the WAL segment holding ``lsn`` on ``timeline``."""
    if not _LSN.match(lsn):
        raise ValueError(f"not an LSN: {lsn!r}")
    position = lsn_int(lsn)
    number = position // segment_size
    per_id = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_id:08X}{number % per_id:08X}"
