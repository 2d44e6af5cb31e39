"""One small hierarchy of errors; the CLI maps each to a one-line message and an exit code.

Exit codes: 1 for operational failures (a backup that failed, storage down), 2 for bad
input the user can fix (policy file, arguments), 3 for integrity failures (a backup that
does not verify), 4 for a catalog that needs migrating or is unreachable.
"""

from __future__ import annotations


class VowvaultError(Exception):
    """Base of every error vowvault raises on purpose."""

    exit_code = 1
    permanent = False
    details: list[str] = []
    """Further lines (more problems, the cause chain) shown with ``-v``."""
    """Another attempt cannot fix it (bad input or configuration, refused credentials, a
    source that is not there): orchestrators do not retry it."""


class ConfigError(VowvaultError):
    """Settings or arguments that cannot work; the message says what to change."""

    exit_code = 2
    permanent = True


class PolicyError(ConfigError):
    """A policy file that does not validate; the message names file, policy and field."""

    def __init__(self, message: str, *, file: str | None = None, policy: str | None = None,
                 field: str | None = None, line: int | None = None) -> None:
        self.file, self.policy, self.field, self.line = file, policy, field, line
        where = []
        if file:
            where.append(f"{file}:{line}" if line else file)
        if policy:
            where.append(f"policy {policy!r}")
        if field:
            where.append(f"field {field}")
        super().__init__(": ".join([*where, message]) if where else message)


class BoundaryError(ConfigError):
    """A policy points the service somewhere its organization is not allowed (see
    ``vowvault.service``); refused, recorded, never retried."""


class NotFound(VowvaultError):
    """A named thing (policy, backup, organization) does not exist in the catalog."""

    exit_code = 2
    permanent = True


class CatalogError(VowvaultError):
    """The catalog is unreachable or not at the schema version this code needs."""

    exit_code = 4


class IntegrityError(VowvaultError):
    """Stored data does not match what was written: tampered, truncated or corrupted."""

    exit_code = 3


class StorageError(VowvaultError):
    """A storage target failed; the message names the target and the object."""


class ObjectNotFound(StorageError):
    """The object does not exist on the target."""


class StoragePermissionError(StorageError):
    """The target refused access: credentials, permissions or a bucket policy."""

    exit_code = 2
    permanent = True


class StorageFullError(StorageError):
    """The target has no room left (or a quota was reached)."""


class TransientStorageError(StorageError):
    """A failure that may pass (timeout, throttling, 5xx); retried by the retry wrapper."""


class TargetUnavailableError(StorageError):
    """The target answers but is not the repository the catalog knows (its marker is
    missing or another): an unmounted NAS, another bucket. Like an outage, never damage."""


class ArchivedObjectError(StorageError):
    """The object is in an archive tier and must be restored (rehydrated) before reading."""


class SourceError(VowvaultError):
    """The thing being backed up (a database, a directory) could not be read as a whole
    (a server that does not answer may answer later: worth another attempt)."""


class SourceMissingError(SourceError):
    """The source is not there: no such directory, not a directory, no such database."""

    permanent = True


class SourceAccessError(SourceError):
    """The source refused us: a wrong password, no permission to read."""

    permanent = True


class KeyUnavailableError(VowvaultError):
    """A key-encryption key is missing, destroyed or wrong for this backup."""

    exit_code = 3
    permanent = True


class RestoreError(VowvaultError):
    """A restore could not start or did not produce what the backup holds."""


class TargetInTheWay(RestoreError):
    """The restore target holds something and ``--force`` was not given: the user's to
    decide, so bad input (exit 2), not a failure."""

    exit_code = 2
    permanent = True


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: work stops, what it wrote is removed, it is recorded."""


def is_permanent(exc: BaseException) -> bool:
    """Whether another attempt is pointless (see ``VowvaultError.permanent``)."""
    return isinstance(exc, VowvaultError) and exc.permanent
