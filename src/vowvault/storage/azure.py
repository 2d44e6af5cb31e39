"""Azure Blob Storage (``az://container/prefix``), block blobs.

Writing: each part is a staged block (Put Block) whose id is derived from the upload and
the part number, so resending a part replaces the same block; ``commit`` is one Put Block
List, which makes the object appear whole and replaces any previous one. A lone part
shorter than ``part_size`` (the whole object is small) is sent with one Put Blob at
``commit`` instead. Staged blocks that are never committed stay invisible (listing and
reads only see committed blobs; an existing blob is unchanged by blocks staged under its
name) and the service discards them a week after the last Put Block: ``abort`` therefore
sends nothing. ``delete`` removes a blob with its snapshots.

Reading: one ranged GET per ``load``, straight through the SDK's generated operation.
``BlobClient.download_blob`` would split a range into several requests and retries a
broken body by itself (three tries, one second apart): that would be a second retry layer
under ``storage.wrap``, and the service's answers would no longer be counted once. (That
operation sits behind the private ``BlobClient._client``; the contract and fault tests
fail loudly should an SDK release move it.)

Tiers: HOT / WARM / COLD / ARCHIVE / DEEP_ARCHIVE are Hot / Cool / Cold / Archive /
Archive (Azure has one archive tier, so a DEEP_ARCHIVE object stats as ARCHIVE). An
archived blob cannot be read: ``start_restore`` rehydrates it to Hot with
``rehydrate_priority`` (Standard: up to 15 hours; High: under an hour for objects under
10 GB). Rehydration is permanent, not a temporary copy as on S3 (``days`` is ignored) and
leaves no mark on the blob: once a blob is online it is readable, so ``stat`` reports
``restore_state`` "in-progress" while a rehydration is pending and "restored" for every
online blob. Nothing moves a rehydrated blob back to Archive by itself: ``set_tier`` or an
Azure lifecycle management rule does. Replacing an archived blob is allowed by the service
(an early-deletion charge applies); Azurite refuses it with BlobArchived, which surfaces as
``ArchivedObjectError``.

Credentials, first match wins:

1. ``credentials_secret``: a secret reference (``vowvault.secrets``: ``env:NAME``,
   ``file:/path``, a Prefect Secret block) whose value is a connection string;
2. ``AZURE_STORAGE_CONNECTION_STRING``, the variable Azure tooling reads (also how tests
   point the SDK at Azurite);
3. an account (``az://container/prefix?account=NAME`` or ``AZURE_STORAGE_ACCOUNT``; a name
   or an ``https://`` blob endpoint) with ``AZURE_STORAGE_KEY``, or else Microsoft Entra
   ID through ``azure.identity.DefaultAzureCredential`` (managed identity, workload
   identity, environment, Azure CLI login). ``azure-identity`` is not a dependency: add
   ``"azure-identity>=1.15"`` to ``pyproject.toml`` where that is wanted.

Connection strings and keys are never logged, and error messages never contain them.

Legal hold: Azure has it (and time-based retention) through immutable storage, set on a
container or, with version-level immutability, per blob version (``BlobClient.
set_legal_hold``); Azurite implements none of it, so ``legal_hold`` is False here and
``set_legal_hold`` stays unimplemented until it can be tested.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobServiceClient,
    ExponentialRetry,
    StandardBlobTier,
)

from vowvault.domain import Tier
from vowvault.errors import (
    ArchivedObjectError,
    ConfigError,
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

_TIERS = {
    Tier.HOT: StandardBlobTier.HOT,
    Tier.WARM: StandardBlobTier.COOL,
    Tier.COLD: StandardBlobTier.COLD,
    Tier.ARCHIVE: StandardBlobTier.ARCHIVE,
    Tier.DEEP_ARCHIVE: StandardBlobTier.ARCHIVE,
}
_FROM_AZURE = {"hot": Tier.HOT, "cool": Tier.WARM, "cold": Tier.COLD, "archive": Tier.ARCHIVE}

MAX_BLOCKS = 50_000
"""Blocks in one block blob: with 8 MiB parts, objects up to 390 GiB."""
BATCH = 256
"""Sub-requests in one Blob Batch request."""

CODES = ErrorCodes(
    not_found=frozenset({"BlobNotFound"}),
    transient=frozenset({"ServerBusy", "OperationTimedOut", "InternalError"}),
    denied=frozenset({
        "AuthorizationFailure", "AuthenticationFailed", "AuthorizationPermissionMismatch",
        "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch", "AuthorizationServiceMismatch",
        "InsufficientAccountPermissions", "InvalidAuthenticationInfo",
        "NoAuthenticationInformation", "AccountIsDisabled", "ContainerDisabled"}))
MIN_STORAGE_DAYS = {Tier.WARM: 30, Tier.COLD: 90, Tier.ARCHIVE: 180, Tier.DEEP_ARCHIVE: 180}
"""Cool, Cold and Archive charge an early deletion before these many days."""



@dataclass(frozen=True)
class AzureConfig:
    container: str
    prefix: str = ""
    """Object names are stored under ``prefix/``; names given to the backend are relative."""
    account: str | None = None
    """Account name or blob endpoint URL, used when no connection string is configured."""
    credentials_secret: str | None = None
    """A secret reference whose value is a connection string (see the module docstring)."""
    part_size: int = 8 << 20
    max_connections: int = 4
    upload_concurrency: int = 4
    """Blocks of one blob staged at once (at most ``max_connections``); each holds
    ``part_size`` bytes in memory while it travels."""
    rehydrate_priority: str = "Standard"
    """"Standard" or "High" (faster, dearer): how ``start_restore`` rehydrates."""

    def __post_init__(self) -> None:
        if not 1 <= self.part_size <= 4000 << 20:
            raise ConfigError(f"part_size {self.part_size}: Azure blocks hold 1 byte to "
                              f"4000 MiB")
        if self.rehydrate_priority not in ("Standard", "High"):
            raise ConfigError(f"rehydrate_priority {self.rehydrate_priority!r}: use "
                              f"'Standard' or 'High'")

    @classmethod
    def from_url(cls, url: str, *, credentials_secret: str | None = None) -> AzureConfig:
        """``az://container/prefix``, optionally ``?account=NAME`` (``storage.url``)."""
        target = parse_target_url(url)
        if target.scheme != "az":
            raise ConfigError(f"not an Azure storage URL: {url!r} (use az://container/prefix)")
        return cls(container=target.container, prefix=target.path,
                   account=target.options.get("account"),
                   credentials_secret=credentials_secret)


class AzureBackend(StorageBackend):
    def __init__(self, config: AzureConfig) -> None:
        self.config = config
        self.prefix = config.prefix.strip("/")
        self.url = f"az://{config.container}" + (f"/{self.prefix}" if self.prefix else "")
        self._service = _connect(config, self.url)
        self._container = self._service.get_container_client(config.container)
        self._batch_delete = True

    def properties(self) -> Properties:
        return Properties(provider="azure", archive_needs_restore=True,
                          min_storage_days=MIN_STORAGE_DAYS, legal_hold=False,
                          max_connections=self.config.max_connections,
                          part_size=self.config.part_size,
                          parts_in_flight=max(1, min(self.config.upload_concurrency,
                                                     self.config.max_connections)),
                          read_ahead=max(2, min(CLOUD_READ_AHEAD,
                                                self.config.max_connections)))

    def _key(self, name: str) -> str:
        check_name(self.url, name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _blob(self, name: str) -> BlobClient:
        return self._container.get_blob_client(self._key(name))

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        return _AzureUpload(self, name, self._blob(name), tier)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range: offset {offset}, length {length}")
        blob = self._blob(name)
        if length == 0:
            self.stat(name)  # an empty range of a missing object is still an error
            return b""
        if length is None:
            byte_range = f"bytes={offset}-" if offset else None
        else:
            byte_range = f"bytes={offset}-{offset + length - 1}"
        try:
            # One GET, no retry of a broken body (see the module docstring): the SDK's
            # generated Get Blob operation, which download_blob itself calls.
            stream = blob._client.blob.download(range=byte_range, decompress=False)
            return b"".join(stream)
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the range starts at or after the end
                return b""
            raise self._error(exc, name) from exc
        except Exception as exc:
            raise self._error(exc, name) from exc

    def stat(self, name: str) -> ObjectInfo:
        blob = self._blob(name)
        try:
            props = blob.get_blob_properties()
        except Exception as exc:
            raise self._error(exc, name) from exc
        return _info(name, props)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            # The service lists in name order, a page (up to 5,000 names) per request.
            for props in self._container.list_blobs(name_starts_with=base + prefix):
                yield _info(props.name[len(base):], props)
        except Exception as exc:
            raise self._error(exc, prefix or "") from exc

    def delete(self, names: Iterable[str]) -> None:
        keys = {self._key(n): n for n in names}
        todo = list(keys)
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            if len(chunk) > 1 and self._batch_delete:
                try:
                    results = list(self._container.delete_blobs(
                        *chunk, delete_snapshots="include", raise_on_any_failure=False))
                except Exception as exc:
                    error = self._error(exc, keys[chunk[0]])
                    if isinstance(error, TransientStorageError | StoragePermissionError):
                        raise error from exc
                    # The batch request itself was refused: some accounts (hierarchical
                    # namespace) and emulators have no Blob Batch. One by one, then.
                    self._batch_delete = False
                else:
                    for key, result in zip(chunk, results, strict=False):
                        if result.status_code not in (200, 202, 404):
                            key = _batch_key(result, self.config.container) or key
                            raise self._status_error(
                                result.status_code, result.headers.get("x-ms-error-code"),
                                result.reason or "", keys.get(key, key))
                    continue
            for key in chunk:
                self._delete_one(key, keys[key])

    def _delete_one(self, key: str, name: str) -> None:
        try:
            self._container.delete_blob(key, delete_snapshots="include")
        except HttpResponseError as exc:
            if exc.status_code == 404:  # already gone (or its container is)
                return
            raise self._error(exc, name) from exc
        except Exception as exc:
            raise self._error(exc, name) from exc

    def set_tier(self, name: str, tier: Tier) -> None:
        blob = self._blob(name)
        target = _TIERS[tier]
        # Moving an archived blob online rehydrates it; Standard is the service's default.
        priority = self.config.rehydrate_priority if (
            target != StandardBlobTier.ARCHIVE and self.config.rehydrate_priority != "Standard"
        ) else None
        try:
            blob.set_standard_blob_tier(target, rehydrate_priority=priority)
        except Exception as exc:
            raise self._error(exc, name) from exc

    def start_restore(self, name: str, days: int = 7) -> None:
        info = self.stat(name)
        if not info.archived or info.restore_state == "in-progress":
            return
        try:
            self._blob(name).set_standard_blob_tier(
                StandardBlobTier.HOT, rehydrate_priority=self.config.rehydrate_priority)
        except HttpResponseError as exc:
            if _code(exc) == "BlobBeingRehydrated":  # asked twice, concurrently
                return
            raise self._error(exc, name) from exc
        except Exception as exc:
            raise self._error(exc, name) from exc

    def close(self) -> None:
        self._service.close()

    def _error(self, exc: BaseException, name: str) -> StorageError:
        """Our error for an SDK or transport failure on ``name``: one line, no secrets."""
        if isinstance(exc, StorageError):
            return exc
        if not isinstance(exc, HttpResponseError) and not _is_transport(exc):
            # The SDK can fail while parsing an unusual error answer (a 403 without an
            # x-ms-error-code header, say): the answer is what matters.
            exc = _answer(exc) or exc
        if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
            return StoragePermissionError(f"{self.url}: cannot authenticate: "
                                          f"{_first_line(exc)}")
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            return self._status_error(exc.status_code, _code(exc), _first_line(exc), name)
        where = f"{self.url}/{name}" if name else self.url
        if _is_transport(exc):
            # Connection refused or reset, timeouts, a body cut short: all worth a retry.
            return transport_error(where, exc)
        return StorageError(f"{where}: {type(exc).__name__}: {_first_line(exc)}")

    def _status_error(self, status: int, code: str | None, message: str,
                      name: str) -> StorageError:
        where = f"{self.url}/{name}" if name else self.url
        if code == "ContainerNotFound":
            return StorageError(f"{self.url}: container {self.config.container!r} does not "
                                f"exist (create it, or fix the target URL)")
        if code == "BlobArchived":
            return ArchivedObjectError(f"{where}: the blob is in the Archive tier; start a "
                                       f"restore (rehydration) before reading or replacing it")
        if code == "BlobBeingRehydrated":
            return ArchivedObjectError(f"{where}: a restore (rehydration) of the blob is "
                                       f"still in progress")
        if code == "BlockCountExceedsLimit":
            return StorageError(f"{where}: more than {MAX_BLOCKS} parts; use a larger "
                                f"part_size")
        return service_error(where, status=status, code=code, message=message, codes=CODES)


class _AzureUpload(Upload):
    def __init__(self, backend: AzureBackend, name: str, blob: BlobClient, tier: Tier) -> None:
        self.backend, self.name, self.blob, self.tier = backend, name, blob, tier
        # Unique per upload: two writers of one name never commit each other's blocks.
        # Every block id of a blob must have the same length: this format is fixed.
        self.token = uuid.uuid4().hex[:16]
        self.sizes: dict[int, int] = {}
        self.held: bytes | None = None
        """A short part 0, sent with Put Blob at commit when it is the only part."""
        self.lock = threading.Lock()

    def _block_id(self, number: int) -> str:
        return base64.b64encode(f"{self.token}{number:08d}".encode()).decode()

    def write_part(self, number: int, data: bytes) -> None:
        if not 0 <= number < MAX_BLOCKS:
            raise StorageError(f"{self.backend.url}/{self.name}: part {number} is beyond "
                               f"Azure's {MAX_BLOCKS} blocks per blob; use a larger part_size")
        with self.lock:
            if number == 0 and len(data) < self.backend.config.part_size and (
                    self.sizes.keys() <= {0}):
                self.held = data
                self.sizes[0] = len(data)
                return
            held = self.held if number != 0 else None
        if held is not None:  # more parts follow: part 0 becomes a block too
            self._stage(0, held)
            with self.lock:
                if self.held is held:
                    self.held = None
        self._stage(number, data)
        with self.lock:
            self.sizes[number] = len(data)
            if number == 0:
                self.held = None

    def _stage(self, number: int, data: bytes) -> None:
        try:
            self.blob.stage_block(self._block_id(number), data, length=len(data))
        except Exception as exc:
            raise self.backend._error(exc, self.name) from exc

    def commit(self) -> ObjectInfo:
        with self.lock:
            numbers = sorted(self.sizes)
            held = self.held
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
            raise StorageError(f"{self.backend.url}/{self.name}: cannot commit, part(s) "
                               f"{missing[:5]} were never written")
        tier = _TIERS[self.tier]
        try:
            if len(numbers) <= 1 and (held is not None or not numbers):
                result = self.blob.upload_blob(held or b"", overwrite=True,
                                               standard_blob_tier=tier, max_concurrency=1)
            else:
                # "Latest" blocks: after a commit whose answer was lost, a resent commit
                # finds the same blocks, now committed, and changes nothing.
                result = self.blob.commit_block_list(
                    [BlobBlock(self._block_id(n)) for n in numbers], standard_blob_tier=tier)
        except Exception as exc:
            raise self.backend._error(exc, self.name) from exc
        archived, state = _archive_state(tier.value, None)
        return ObjectInfo(name=self.name, size=sum(self.sizes.values()),
                          tier=_FROM_AZURE[tier.value.lower()],
                          modified=result.get("last_modified"), archived=archived,
                          restore_state=state)

    def abort(self) -> None:
        # Staged blocks are invisible and expire by themselves; an existing blob of this
        # name must survive, so there is nothing to delete.
        with self.lock:
            self.held = None


def _connect(config: AzureConfig, url: str) -> BlobServiceClient:
    options: dict[str, Any] = {
        # storage.wrap is the one retry layer.
        "retry_policy": ExponentialRetry(retry_total=0),
        # A lone part goes out in one Put Blob (upload_blob would cut a larger one).
        "max_single_put_size": max(config.part_size, 64 << 20),
        "connection_data_block_size": 1 << 20,
    }
    conn = None
    if config.credentials_secret:
        from vowvault import secrets

        conn = secrets.resolve(config.credentials_secret)
    elif os.environ.get("AZURE_STORAGE_CONNECTION_STRING"):
        conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    if conn:
        try:
            return BlobServiceClient.from_connection_string(conn, **options)
        except (ValueError, AttributeError, IndexError):
            raise ConfigError(f"{url}: the Azure connection string is malformed") from None
    account = config.account or os.environ.get("AZURE_STORAGE_ACCOUNT")
    if not account:
        raise ConfigError(f"{url}: no Azure credentials: set AZURE_STORAGE_CONNECTION_STRING, "
                          f"give the target a credentials_secret, or name the account "
                          f"(AZURE_STORAGE_ACCOUNT or ?account=NAME)")
    endpoint = account if account.startswith("https://") else (
        f"https://{account}.blob.core.windows.net")
    key = os.environ.get("AZURE_STORAGE_KEY")
    credential: Any
    if key:
        name = urlsplit(endpoint).hostname.split(".")[0]  # type: ignore[union-attr]
        credential = {"account_name": name, "account_key": key}
    else:
        try:
            from azure.identity import DefaultAzureCredential  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError(
                f"{url}: account {account!r} has no key (AZURE_STORAGE_KEY) and "
                f"azure-identity is not installed for Microsoft Entra ID sign-in; set "
                f"AZURE_STORAGE_CONNECTION_STRING or install azure-identity") from None
        credential = DefaultAzureCredential()
    return BlobServiceClient(endpoint, credential=credential, **options)


def _info(name: str, props: Any) -> ObjectInfo:
    tier = _FROM_AZURE.get((props.blob_tier or "Hot").lower(), Tier.HOT)  # premium: hot
    archived, state = _archive_state(props.blob_tier or "Hot", props.archive_status)
    modified = props.last_modified
    if isinstance(modified, dt.datetime) and modified.tzinfo is None:
        modified = modified.replace(tzinfo=dt.UTC)
    return ObjectInfo(name=name, size=props.size, tier=tier, modified=modified,
                      archived=archived, restore_state=state)


def _archive_state(tier: str, archive_status: str | None) -> tuple[bool, str | None]:
    """``archived`` and ``restore_state`` of a blob in ``tier``."""
    if (archive_status or "").startswith("rehydrate-pending"):
        return True, "in-progress"
    if tier.lower() == "archive":
        return True, None
    return False, "restored"  # online: readable (a rehydration leaves no mark to tell apart)


def _answer(exc: BaseException) -> HttpResponseError | None:
    seen = exc.__context__ or exc.__cause__
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, HttpResponseError) and seen.status_code is not None:
            return seen
        seen = seen.__context__ or seen.__cause__
    return None


def _code(exc: HttpResponseError) -> str | None:
    code = getattr(exc, "error_code", None)
    if code:
        return str(code)
    response = getattr(exc, "response", None)
    if response is None:
        return None
    header = response.headers.get("x-ms-error-code")
    if header:
        return str(header)
    try:  # the code is also in the XML body, when there is one
        found = re.search(r"<Code>([^<]{1,100})</Code>", response.text())
    except Exception:  # no readable body, no code
        return None
    return found.group(1) if found else None


def _batch_key(result: Any, container: str) -> str | None:
    """The blob name a Blob Batch sub-response answers for."""
    request = getattr(result, "request", None)
    if request is None:
        return None
    path = unquote(urlsplit(request.url).path)
    _, found, key = path.partition(f"/{container}/")  # after /account/ on emulators
    return key if found else None


def _is_transport(exc: BaseException) -> bool:
    """A failure of the connection rather than an answer of the service."""
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, HttpResponseError):
        return exc.status_code is None  # a body cut short (IncompleteReadError, ...)
    return isinstance(exc, ServiceRequestError | ServiceResponseError | ConnectionError
                      | TimeoutError | requests.RequestException | Urllib3Error)


def _first_line(exc: BaseException) -> str:
    """The first line of an SDK message (Azure's run on with headers and XML), cleaned."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    line = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return clean(line)
