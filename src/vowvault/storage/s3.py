"""Amazon S3 and S3-compatible services (``s3://bucket/prefix``).

Credentials, region and endpoint come from boto3's standard chain: environment variables
(``AWS_ACCESS_KEY_ID``..., ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), the shared config
and credentials files, SSO, instance and task roles. Nothing here logs a secret or puts one
in a message. With a custom endpoint (an emulator, MinIO, Ceph...) addressing is path-style.

How the contract maps onto S3:

- save: an object smaller than one part is one PutObject at commit; anything larger is a
  multipart upload, created at the first full part and invisible until
  CompleteMultipartUpload, so a reader never sees a prefix. Parts carry a CRC32 that S3
  checks. S3 allows 10,000 parts, so the largest object is 10,000 x ``part_size``
  (78 GiB at the default 8 MiB); raise ``part_size`` for larger streams. A bucket lifecycle
  rule ``AbortIncompleteMultipartUpload`` is recommended for uploads whose abort was lost.
- delete: in a versioned bucket (every Object Lock bucket is one) a delete by key only adds a
  delete marker and keeps the data, so ``delete`` removes every version of the names; that
  is what a legal hold or a retention period refuses. Unversioned buckets take plain
  batched DeleteObjects. In-progress multipart uploads of those names are aborted too.
- tiers: HOT / WARM / COLD / ARCHIVE / DEEP_ARCHIVE are STANDARD / STANDARD_IA / GLACIER_IR /
  GLACIER / DEEP_ARCHIVE (``S3Config.storage_classes``). A tier change is an in-place copy
  (a multipart copy above 5 GiB); in a versioned bucket the previous version is then
  deleted unless it is locked, so the bytes do not stay billed in the old class. GLACIER
  and DEEP_ARCHIVE objects must be restored (``start_restore``) before they can be read or
  moved.
- No retries here: botocore makes exactly one attempt per call, and this module reports
  what may pass as ``TransientStorageError`` for ``vowvault.storage.wrap`` to retry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bexc
import urllib3.exceptions
from botocore.config import Config as BotoConfig

from vowvault.domain import Tier
from vowvault.errors import (
    ArchivedObjectError,
    ConfigError,
    ObjectNotFound,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from vowvault.storage.base import (
    CLOUD_READ_AHEAD,
    ErrorCodes,
    ObjectInfo,
    Properties,
    StorageBackend,
    Upload,
    check_name,
    clean,
    service_error,
    transport_error,
)
from vowvault.storage.url import parse_target_url

log = logging.getLogger("vowvault.storage.s3")

MiB = 1 << 20
MIN_PART = 5 * MiB
"""S3's smallest part (all but the last)."""
MAX_PART = 5 << 30
MAX_PARTS = 10_000
MAX_COPY = 5 << 30
"""Largest object CopyObject copies in one request; beyond it a multipart copy is needed."""
DELETE_BATCH = 1000
"""DeleteObjects takes at most 1,000 keys."""

DEFAULT_STORAGE_CLASSES: Mapping[Tier, str] = {
    Tier.HOT: "STANDARD",
    Tier.WARM: "STANDARD_IA",
    Tier.COLD: "GLACIER_IR",
    Tier.ARCHIVE: "GLACIER",
    Tier.DEEP_ARCHIVE: "DEEP_ARCHIVE",
}
_TIER_OF_CLASS: Mapping[str, Tier] = {
    "STANDARD": Tier.HOT,
    "REDUCED_REDUNDANCY": Tier.HOT,
    "INTELLIGENT_TIERING": Tier.HOT,
    "EXPRESS_ONEZONE": Tier.HOT,
    "OUTPOSTS": Tier.HOT,
    "STANDARD_IA": Tier.WARM,
    "ONEZONE_IA": Tier.WARM,
    "GLACIER_IR": Tier.COLD,
    "GLACIER": Tier.ARCHIVE,
    "DEEP_ARCHIVE": Tier.DEEP_ARCHIVE,
}
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
"""Classes whose objects cannot be read (nor copied) until restored."""

MIN_STORAGE_DAYS = {Tier.WARM: 30, Tier.COLD: 90, Tier.ARCHIVE: 90, Tier.DEEP_ARCHIVE: 180}
"""STANDARD_IA, GLACIER_IR, GLACIER and DEEP_ARCHIVE bill at least these many days."""



@dataclass(frozen=True)
class S3Credentials:
    """Explicit credentials instead of the standard chain; never printed."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret(cls, ref: str) -> S3Credentials:
        """The named secret (``vowvault.secrets``) holding JSON with ``access_key_id`` and
        ``secret_access_key`` (and optionally ``session_token``); the AWS spellings
        (``aws_access_key_id``..., ``AccessKeyId``...) are accepted too."""
        from vowvault.secrets import resolve

        try:
            value = json.loads(resolve(ref))
        except ValueError:
            value = None
        if isinstance(value, dict):
            found = {ours: next((value[k] for k in spellings if value.get(k)), None)
                     for ours, spellings in _CREDENTIAL_KEYS.items()}
            if found["access_key_id"] and found["secret_access_key"]:
                return cls(**found)
        raise ConfigError(f"secret {ref!r} does not hold AWS credentials: expected JSON with "
                          "access_key_id and secret_access_key (session_token optional)")


_CREDENTIAL_KEYS = {
    "access_key_id": ("access_key_id", "aws_access_key_id", "AccessKeyId"),
    "secret_access_key": ("secret_access_key", "aws_secret_access_key", "SecretAccessKey"),
    "session_token": ("session_token", "aws_session_token", "SessionToken"),
}


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    """Key prefix under which every object name lives (no leading or trailing ``/``)."""
    region: str | None = None
    """None: from the standard chain (``AWS_REGION``, ``AWS_DEFAULT_REGION``, config)."""
    endpoint_url: str | None = None
    """None: from the standard chain (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, config),
    else AWS."""
    profile: str | None = None
    addressing_style: str | None = None
    """"path", "virtual" or "auto"; None: path-style with a custom endpoint, else auto."""
    storage_classes: Mapping[Tier, str] = field(
        default_factory=lambda: dict(DEFAULT_STORAGE_CLASSES))
    part_size: int = 8 * MiB
    max_pool_connections: int = 10
    upload_concurrency: int = 4
    """Parts of one object uploaded at once (at most ``max_pool_connections``); each holds
    ``part_size`` bytes in memory while it travels."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    checksum_algorithm: str | None = "CRC32"
    """Checksum S3 verifies on every PutObject and part; None for S3-compatible services
    that reject the flexible-checksum headers (then only what a service requires is sent)."""
    restore_tier: str = "Standard"
    """Retrieval tier of ``start_restore``: Expedited, Standard or Bulk."""
    restore_days: int | None = None
    """Overrides the ``days`` callers pass to ``start_restore`` when set."""
    delete_versions: bool = True
    """In versioned buckets, delete every version (needs s3:DeleteObjectVersion). False
    leaves delete markers for a NoncurrentVersionExpiration rule to clean up; a legal hold
    then no longer stops ``delete`` (the held version is kept, hidden)."""
    copy_part_size: int = 512 * MiB
    """Part size of multipart copies (tier changes of objects above 5 GiB)."""
    credentials_secret: str | None = None
    """A named secret (``env:NAME``, ``file:/path``, a Prefect Secret block) holding the
    credentials, see ``S3Credentials.from_secret``; None: the standard chain."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ConfigError(f"not a valid S3 bucket name: {self.bucket!r}")
        prefix = self.prefix.strip("/")
        if prefix and ("" in prefix.split("/") or ".." in prefix.split("/")):
            raise ConfigError(f"not a valid key prefix: {self.prefix!r}")
        object.__setattr__(self, "prefix", prefix)
        if not MIN_PART <= self.part_size <= MAX_PART:
            raise ConfigError(f"part_size must be between 5 MiB and 5 GiB, not {self.part_size}")
        if not MIN_PART <= self.copy_part_size <= MAX_PART:
            raise ConfigError("copy_part_size must be between 5 MiB and 5 GiB")
        missing = set(Tier) - set(self.storage_classes)
        if missing:
            raise ConfigError(f"storage_classes lacks {', '.join(sorted(missing))}")
        if self.addressing_style not in (None, "path", "virtual", "auto"):
            raise ConfigError(f"unknown addressing style {self.addressing_style!r}")

    @classmethod
    def from_url(cls, url: str) -> S3Config:
        """``s3://bucket/prefix``, optionally with ``?region=...&endpoint_url=...&profile=...``
        (``storage.url``)."""
        target = parse_target_url(url)
        if target.scheme != "s3":
            raise ConfigError(f"not an S3 storage URL: {url!r} (use s3://bucket/prefix)")
        return cls(bucket=target.container, prefix=target.path, **target.options)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


class S3Backend(StorageBackend):
    def __init__(self, config: S3Config, *, credentials: S3Credentials | None = None) -> None:
        self.config = config
        self.url = config.url
        self._root = f"{config.prefix}/" if config.prefix else ""
        if credentials is None and config.credentials_secret:
            credentials = S3Credentials.from_secret(config.credentials_secret)
        self.client = self._make_client(credentials)
        self._versioned: bool | None = None

    def _make_client(self, credentials: S3Credentials | None) -> Any:
        cfg = self.config
        try:
            session = boto3.session.Session(
                profile_name=cfg.profile, region_name=cfg.region,
                aws_access_key_id=credentials.access_key_id if credentials else None,
                aws_secret_access_key=credentials.secret_access_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None)

            def build(style: str) -> Any:
                extra: dict[str, Any] = {}
                if cfg.checksum_algorithm is None:
                    extra["request_checksum_calculation"] = "when_required"
                return session.client("s3", endpoint_url=cfg.endpoint_url, config=BotoConfig(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=cfg.max_pool_connections,
                    connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
                    s3={"addressing_style": style}, user_agent_extra="vowvault", **extra))

            client = build(cfg.addressing_style or "auto")
            if cfg.addressing_style is None and _custom_endpoint(client.meta.endpoint_url):
                # Emulators and most S3-compatible services have no per-bucket host names.
                client.close()
                client = build("path")
        except bexc.BotoCoreError as exc:
            raise ConfigError(f"{self.url}: {clean(str(exc))}") from exc
        return client

    def properties(self) -> Properties:
        return Properties(provider="s3", archive_needs_restore=True,
                          min_storage_days=MIN_STORAGE_DAYS, legal_hold=True,
                          max_connections=self.config.max_pool_connections,
                          part_size=self.config.part_size,
                          parts_in_flight=max(1, min(self.config.upload_concurrency,
                                                     self.config.max_pool_connections)),
                          read_ahead=max(2, min(CLOUD_READ_AHEAD,
                                                self.config.max_pool_connections)))

    def _key(self, name: str) -> str:
        return self._root + check_name(self.url, name)

    def _where(self, name: str | None) -> str:
        return f"{self.url}/{name}" if name else self.url

    def _call(self, name: str | None, operation: str, **kw: Any) -> Any:
        """One SDK call, its errors translated."""
        try:
            return getattr(self.client, operation)(Bucket=self.config.bucket, **kw)
        except _SDK_ERRORS as exc:
            raise self._error(exc, name) from exc

    def _error(self, exc: BaseException, name: str | None) -> StorageError:
        return translate(exc, self._where(name))

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        return _S3Upload(self, name, self._key(name), tier)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if length == 0:
            self.stat(name)  # a missing object is still an error
            return b""
        ranged = offset > 0 or length is not None
        kw = {}
        if ranged:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"
        try:
            response = self.client.get_object(Bucket=self.config.bucket, Key=key, **kw)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except bexc.ClientError as exc:
            if _code(exc) == "InvalidRange" or _status(exc) == 416:
                return b""  # the range starts at or past the end
            raise self._error(exc, name) from exc
        except _SDK_ERRORS as exc:
            raise self._error(exc, name) from exc
        if ranged and "ContentRange" not in response:
            # A service that ignored the Range header sent the whole object.
            data = data[offset:] if length is None else data[offset:offset + length]
        return data

    def stat(self, name: str) -> ObjectInfo:
        head = self._call(name, "head_object", Key=self._key(name))
        return self._info(name, head)

    def _info(self, name: str, head: Mapping[str, Any]) -> ObjectInfo:
        storage_class = head.get("StorageClass") or "STANDARD"
        restore = _restore_state(head.get("Restore"))
        archived = (storage_class in ARCHIVE_CLASSES or bool(head.get("ArchiveStatus"))) \
            and restore != "restored"
        return ObjectInfo(name=name, size=head["ContentLength"],
                          tier=self._tier(storage_class), modified=head.get("LastModified"),
                          archived=archived, restore_state=restore)

    def _tier(self, storage_class: str) -> Tier:
        for tier, cls in self.config.storage_classes.items():
            if cls == storage_class:
                return tier
        return _TIER_OF_CLASS.get(storage_class, Tier.HOT)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.config.bucket, Prefix=self._root + prefix,
                                   OptionalObjectAttributes=["RestoreStatus"])
        return self._listing(pages, prefix)

    def _listing(self, pages: Iterable[Mapping[str, Any]], prefix: str) -> Iterator[ObjectInfo]:
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(self._root):]
                    if not name:
                        continue
                    storage_class = item.get("StorageClass") or "STANDARD"
                    status = item.get("RestoreStatus")
                    restore = None
                    if status is not None:
                        restore = "in-progress" if status.get("IsRestoreInProgress") \
                            else "restored"
                    yield ObjectInfo(name=name, size=item["Size"],
                                     tier=self._tier(storage_class),
                                     modified=item.get("LastModified"),
                                     archived=storage_class in ARCHIVE_CLASSES
                                     and restore != "restored",
                                     restore_state=restore)
        except _SDK_ERRORS as exc:
            raise self._error(exc, prefix or None) from exc

    def delete(self, names: Iterable[str]) -> None:
        keys = list(dict.fromkeys(self._key(n) for n in names))
        if not keys:
            return
        failures: list[StorageError] = []
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            if self.config.delete_versions and self._bucket_versioned():
                targets = self._versions_of(batch)
            else:
                targets = [{"Key": k} for k in batch]
            for i in range(0, len(targets), DELETE_BATCH):
                failures += self._delete_objects(targets[i:i + DELETE_BATCH])
        self._abort_uploads(keys)
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise type(first)(f"{first}{more}")

    def _delete_objects(self, targets: list[dict[str, str]]) -> list[StorageError]:
        if not targets:
            return []
        response = self._call(None, "delete_objects",
                              Delete={"Objects": targets, "Quiet": True})
        failures = []
        for err in response.get("Errors", ()):
            name = err.get("Key", "")[len(self._root):]
            failures.append(classify(err.get("Code", ""), None,
                                     f"{self._where(name)}: could not delete",
                                     err.get("Message", "")))
        return failures

    def _bucket_versioned(self) -> bool:
        if self._versioned is None:
            try:
                status = self._call(None, "get_bucket_versioning").get("Status")
            except StoragePermissionError:
                log.info("%s: may not read the bucket's versioning; deleting by key only",
                         self.url)
                status = None
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def _versions_of(self, keys: list[str]) -> list[dict[str, str]]:
        """Every version and delete marker of ``keys``: one listing per directory holding
        several of them (a backup's objects share one), else one per key."""
        wanted = set(keys)
        groups: dict[str, list[str]] = {}
        for key in keys:
            groups.setdefault(key.rpartition("/")[0], []).append(key)
        found = []
        for directory, members in groups.items():
            prefixes = [f"{directory}/" if directory else ""] if len(members) > 1 else members
            for listing_prefix in prefixes:
                pages = self.client.get_paginator("list_object_versions").paginate(
                    Bucket=self.config.bucket, Prefix=listing_prefix)
                try:
                    for page in pages:
                        for item in [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]:
                            if item["Key"] in wanted:
                                found.append({"Key": item["Key"],
                                              "VersionId": item["VersionId"]})
                except _SDK_ERRORS as exc:
                    raise self._error(exc, listing_prefix[len(self._root):] or None) from exc
        return found

    def _abort_uploads(self, keys: list[str]) -> None:
        """Abort multipart uploads of ``keys`` left by interrupted saves (few exist at any
        time, so one listing under the keys' common prefix finds them)."""
        wanted = set(keys)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.config.bucket, Prefix=_common_prefix(keys))
        try:
            stale = [(u["Key"], u["UploadId"]) for page in pages
                     for u in page.get("Uploads", ()) if u["Key"] in wanted]
            for key, upload_id in stale:
                with contextlib.suppress(ObjectNotFound):
                    self._abort_upload(key[len(self._root):], key, upload_id)
        except StoragePermissionError as exc:
            # The objects are gone; what is left is invisible and billed until a lifecycle
            # rule (AbortIncompleteMultipartUpload) removes it.
            log.warning("%s: cannot clean up interrupted uploads (%s)", self.url, exc)
        except _SDK_ERRORS as exc:
            error = self._error(exc, None)
            if isinstance(error, StoragePermissionError):
                log.warning("%s: cannot clean up interrupted uploads (%s)", self.url, error)
                return
            raise error from exc

    def _abort_upload(self, name: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.config.bucket, Key=key,
                                               UploadId=upload_id)
        except bexc.ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise self._error(exc, name) from exc
        except _SDK_ERRORS as exc:
            raise self._error(exc, name) from exc

    def set_tier(self, name: str, tier: Tier) -> None:
        key = self._key(name)
        target = self.config.storage_classes[tier]
        head = self._call(name, "head_object", Key=key)
        current = head.get("StorageClass") or "STANDARD"
        if current == target:
            return
        info = self._info(name, head)
        if current in ARCHIVE_CLASSES and info.archived:
            raise ArchivedObjectError(f"{self._where(name)} is archived ({current}): start a "
                                      f"restore first, then change its tier")
        source: dict[str, str] = {"Bucket": self.config.bucket, "Key": key}
        if head.get("VersionId") and head["VersionId"] != "null":
            source["VersionId"] = head["VersionId"]
        try:
            if head["ContentLength"] > MAX_COPY:
                new_version = self._copy_in_parts(name, key, head, source, target)
            else:
                new_version = self._call(
                    name, "copy_object", Key=key, CopySource=source, StorageClass=target,
                    MetadataDirective="COPY", CopySourceIfMatch=head["ETag"]).get("VersionId")
        except StorageError as exc:
            if isinstance(exc.__cause__, bexc.ClientError) and \
                    _code(exc.__cause__) == "PreconditionFailed":
                # Replaced while we copied: a retry applies the tier to the new object.
                raise TransientStorageError(f"{self._where(name)} changed while its tier "
                                            f"was being set") from exc
            raise
        self._after_copy(name, key, head, new_version)

    def _after_copy(self, name: str, key: str, head: Mapping[str, Any],
                    new_version: str | None) -> None:
        """Carry a legal hold and a retention period over to the copy (S3 does not copy
        them), then remove the version copied from, unless it is locked."""
        old_version = head.get("VersionId")
        hold = head.get("ObjectLockLegalHoldStatus") == "ON"
        retain_until = head.get("ObjectLockRetainUntilDate")
        retained = retain_until is not None and retain_until > dt.datetime.now(dt.UTC)
        version = {"VersionId": new_version} if new_version else {}
        # Should this fail, the version copied from keeps its lock (it is not deleted below).
        if hold:
            self._call(name, "put_object_legal_hold", Key=key, LegalHold={"Status": "ON"},
                       **version)
        if retained:
            self._call(name, "put_object_retention", Key=key, Retention={
                "Mode": head["ObjectLockMode"], "RetainUntilDate": retain_until}, **version)
        if not old_version or old_version == "null" or old_version == new_version \
                or hold or retained:
            return
        try:
            self._call(name, "delete_object", Key=key, VersionId=old_version)
        except StorageError as exc:
            log.warning("%s: the version before the tier change stays (%s)",
                        self._where(name), exc)

    def _copy_in_parts(self, name: str, key: str, head: Mapping[str, Any],
                       source: dict[str, str], storage_class: str) -> str | None:
        size = head["ContentLength"]
        part = max(self.config.copy_part_size, -(-size // MAX_PARTS))
        kw: dict[str, Any] = {k: head[k] for k in (
            "ContentType", "ContentEncoding", "ContentDisposition", "ContentLanguage",
            "CacheControl", "WebsiteRedirectLocation") if head.get(k)}
        if head.get("Metadata"):
            kw["Metadata"] = head["Metadata"]
        if head.get("ServerSideEncryption") == "aws:kms":
            kw["ServerSideEncryption"] = "aws:kms"
            if head.get("SSEKMSKeyId"):
                kw["SSEKMSKeyId"] = head["SSEKMSKeyId"]
        upload_id = self._call(name, "create_multipart_upload", Key=key,
                               StorageClass=storage_class, **kw)["UploadId"]

        def copy(number: int) -> dict[str, Any]:
            first = number * part
            last = min(size, first + part) - 1
            result = self._call(name, "upload_part_copy", Key=key, UploadId=upload_id,
                                PartNumber=number + 1, CopySource=source,
                                CopySourceRange=f"bytes={first}-{last}",
                                CopySourceIfMatch=head["ETag"])
            return {"PartNumber": number + 1, "ETag": result["CopyPartResult"]["ETag"]}

        try:
            workers = max(1, min(4, self.config.max_pool_connections))
            with ThreadPoolExecutor(workers, thread_name_prefix="s3-copy") as pool:
                parts = list(pool.map(copy, range(-(-size // part))))
            done = self._call(name, "complete_multipart_upload", Key=key, UploadId=upload_id,
                              MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(StorageError):
                self._abort_upload(name, key, upload_id)
            raise
        return done.get("VersionId")

    def start_restore(self, name: str, days: int = 7) -> None:
        request = {"Days": self.config.restore_days or days,
                   "GlacierJobParameters": {"Tier": self.config.restore_tier}}
        try:
            self.client.restore_object(Bucket=self.config.bucket, Key=self._key(name),
                                       RestoreRequest=request)
        except bexc.ClientError as exc:
            if _code(exc) in ("RestoreAlreadyInProgress", "InvalidObjectState"):
                return  # being restored already, or in a class that needs no restore
            raise self._error(exc, name) from exc
        except _SDK_ERRORS as exc:
            raise self._error(exc, name) from exc

    def set_legal_hold(self, name: str, on: bool) -> None:
        self._call(name, "put_object_legal_hold", Key=self._key(name),
                   LegalHold={"Status": "ON" if on else "OFF"})

    def close(self) -> None:
        self.client.close()


class _S3Upload(Upload):
    """A PutObject of the one small part at commit, or a multipart upload created on the
    first full part; S3 part ``number + 1`` holds part ``number``, so a retried part
    replaces itself."""

    def __init__(self, backend: S3Backend, name: str, key: str, tier: Tier) -> None:
        self.backend, self.name, self.key, self.tier = backend, name, key, tier
        self.storage_class = backend.config.storage_classes[tier]
        self.checksum = backend.config.checksum_algorithm
        self.upload_id: str | None = None
        self.small: bytes | None = None
        """Part 0 while it may be the whole object."""
        self.parts: dict[int, dict[str, str]] = {}
        self.sizes: dict[int, int] = {}
        self.done: ObjectInfo | None = None
        self.aborted = False
        self.lock = threading.RLock()

    def _call(self, operation: str, **kw: Any) -> Any:
        return self.backend._call(self.name, operation, Key=self.key, **kw)

    def _checksum(self) -> dict[str, str]:
        return {"ChecksumAlgorithm": self.checksum} if self.checksum else {}

    def write_part(self, number: int, data: bytes) -> None:
        if not 0 <= number < MAX_PARTS:
            raise StorageError(
                f"{self.backend._where(self.name)}: part {number + 1} is beyond S3's "
                f"{MAX_PARTS} parts; objects this large need a larger part_size")
        with self.lock:
            if self.aborted:  # a part still in flight when the upload was given up
                raise StorageError(f"{self.backend._where(self.name)}: the upload was "
                                   f"aborted")
            if number == 0 and self.upload_id is None \
                    and len(data) < self.backend.config.part_size:
                self.small = data
                return
            if self.upload_id is None:
                self.upload_id = self._call("create_multipart_upload",
                                            StorageClass=self.storage_class,
                                            **self._checksum())["UploadId"]
            if number == 0:
                self.small = None
            elif self.small is not None:
                if len(self.small) < MIN_PART:
                    raise StorageError(f"{self.backend._where(self.name)}: part 0 has "
                                       f"{len(self.small)} bytes, below S3's 5 MiB minimum "
                                       "for a part that is not the last")
                self._upload_part(0, self.small)
                self.small = None
        self._upload_part(number, data)

    def _upload_part(self, number: int, data: bytes) -> None:
        response = self._call("upload_part", UploadId=self.upload_id, PartNumber=number + 1,
                              Body=data, **self._checksum())
        part = {"PartNumber": number + 1, "ETag": response["ETag"]}
        if self.checksum:
            member = f"Checksum{self.checksum.upper()}"
            if response.get(member):
                part[member] = response[member]
        with self.lock:
            self.parts[number] = part
            self.sizes[number] = len(data)

    def commit(self) -> ObjectInfo:
        if self.done is not None:
            return self.done
        if self.upload_id is None:
            data = self.small or b""
            self._call("put_object", Body=data, StorageClass=self.storage_class,
                       **self._checksum())
            size = len(data)
        else:
            if self.small is not None:  # part 0 held, then a part failed before it went
                self._upload_part(0, self.small)
                self.small = None
            numbers = sorted(self.parts)
            if numbers != list(range(len(numbers))):
                raise StorageError(f"{self.backend._where(self.name)}: parts are missing "
                                   f"(have {len(numbers)}, last is {numbers[-1] + 1})")
            size = sum(self.sizes.values())
            self._complete([self.parts[n] for n in numbers], size)
        self.done = ObjectInfo(name=self.name, size=size, tier=self.tier,
                               modified=dt.datetime.now(dt.UTC))
        return self.done

    def _complete(self, parts: list[dict[str, str]], size: int) -> None:
        try:
            self.backend.client.complete_multipart_upload(
                Bucket=self.backend.config.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": parts})
            return
        except bexc.ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise self.backend._error(exc, self.name) from exc
            lost = exc
        except _SDK_ERRORS as exc:
            raise self.backend._error(exc, self.name) from exc
        # A retried complete whose first attempt went through but whose answer was lost.
        try:
            head = self._call("head_object")
        except ObjectNotFound:
            head = {}
        expected = _multipart_etag([p["ETag"] for p in parts])
        if head.get("ContentLength") == size and (expected is None
                                                  or head.get("ETag") == expected):
            return
        raise StorageError(f"{self.backend._where(self.name)}: the multipart upload vanished "
                           f"before it completed (aborted elsewhere?)") from lost

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            self.small = None
            upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None and self.done is None:
            try:
                self.backend._abort_upload(self.name, self.key, upload_id)
            except StorageError:
                with self.lock:
                    self.upload_id = upload_id  # so that a retried abort tries again
                raise


_WIRE_ERRORS = (bexc.HTTPClientError, bexc.ConnectionError, bexc.IncompleteReadError,
                bexc.ChecksumError, urllib3.exceptions.HTTPError, ConnectionError,
                TimeoutError)
"""Failures on the way rather than answers of the service (a body cut short or damaged in
transit included): they may pass."""
_SDK_ERRORS = (bexc.ClientError, bexc.BotoCoreError, urllib3.exceptions.HTTPError,
               ConnectionError, TimeoutError)

CODES = ErrorCodes(
    not_found=frozenset({"NoSuchKey", "NotFound", "NoSuchVersion"}),
    denied=frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
                      "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
                      "InvalidClientTokenId", "UnauthorizedAccess"}),
    full=frozenset({"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage",
                    "StorageFull"}),
    transient=frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError",
                         "Throttling", "ThrottlingException", "TooManyRequests",
                         "RequestLimitExceeded", "OperationAborted", "IncompleteBody",
                         "BadDigest", "XAmzContentSHA256Mismatch", "RequestTimeoutException"}),
    archived=frozenset({"InvalidObjectState", "ObjectNotInActiveTierError"}))
_CREDENTIAL_ERRORS = (bexc.NoCredentialsError, bexc.PartialCredentialsError,
                      bexc.CredentialRetrievalError, bexc.NoAuthTokenError,
                      bexc.TokenRetrievalError, bexc.SSOError)


def translate(exc: BaseException, where: str) -> StorageError:
    """An SDK or connection error as one of ours, in one line naming ``where``."""
    if isinstance(exc, bexc.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code == "NoSuchBucket":
            return StorageError(f"{where}: the bucket does not exist")
        if code == "NoSuchUpload":
            return StorageError(f"{where}: the multipart upload no longer exists")
        return classify(code, _status(exc), where, str(error.get("Message", "")))
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return StoragePermissionError(f"{where}: no usable AWS credentials "
                                      f"({type(exc).__name__})")
    if isinstance(exc, bexc.SSLError) and "CERTIFICATE" in str(exc).upper():
        return StorageError(f"{where}: TLS certificate rejected: {clean(str(exc))}")
    if isinstance(exc, _WIRE_ERRORS):
        return transport_error(where, exc)
    return StorageError(f"{where}: {clean(str(exc)) or type(exc).__name__}")


def classify(code: str, status: int | None, where: str, message: str) -> StorageError:
    """Our error for an S3 error code (and HTTP status when there is one)."""
    return service_error(where, status=status, code=code, message=message, codes=CODES)


def _code(exc: bexc.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: bexc.ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _restore_state(header: str | None) -> str | None:
    """The ``x-amz-restore`` header: absent, ``ongoing-request="true"`` or
    ``ongoing-request="false", expiry-date="..."``."""
    if not header:
        return None
    match = re.search(r'ongoing-request="(true|false)"', header)
    if match is None:
        return None
    return "in-progress" if match.group(1) == "true" else "restored"


def _multipart_etag(etags: list[str]) -> str | None:
    """S3's ETag of a completed multipart upload: MD5 of the parts' binary MD5s, "-N"."""
    try:
        digests = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
    except ValueError:
        return None
    return f'"{hashlib.md5(digests).hexdigest()}-{len(etags)}"'  # noqa: S324 - S3's format


def _common_prefix(keys: list[str]) -> str:
    """The longest string every key starts with (S3 prefixes are strings, not paths)."""
    low, high = min(keys), max(keys)
    size = 0
    while size < len(low) and low[size] == high[size]:
        size += 1
    return low[:size]


def _custom_endpoint(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return not host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))

