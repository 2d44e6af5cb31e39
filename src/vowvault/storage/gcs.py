"""Google Cloud Storage (``gs://bucket/prefix``).

Uploads use the JSON API's resumable protocol, driven here rather than by the SDK so that
each part is one request whose outcome is known, and a retried part resumes exactly where
the session stopped: the session is asked how much it holds (``Content-Range: bytes */*``
answered by 308 and ``Range``) and only the missing bytes are sent. Parts are sent in
multiples of 256 KiB, as the service requires of every chunk but the last; the unaligned
remainder of a part (under 256 KiB) waits for the next part or the commit. The object
appears only when the final request names the total size. An object that fits in one
part is sent at commit in a single multipart request instead (no session at all).

Downloads are one ranged GET each (416: past the end). Metadata calls (stat, list, batch
delete, rewrite) go through google-cloud-storage with ``retry=None``: the one retry layer
is ``vowvault.storage.wrap``. Tiers are storage classes set at upload and changed by a
rewrite in place, the only way the service changes an existing object's class. Archive
classes are readable at once (no restore step), at a retrieval fee.

Credentials: the SDK's default chain (ADC), or a service-account JSON key named by
``credentials_secret``. With ``STORAGE_EMULATOR_HOST`` set (the variable the SDK honours,
scheme included), requests go there without credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from vowvault.domain import Tier
from vowvault.errors import (
    ConfigError,
    IntegrityError,
    ObjectNotFound,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
)
from vowvault.storage.base import (
    CLOUD_READ_AHEAD,
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

QUANTUM = 256 * 1024
"""Every chunk of a resumable upload but the last is a multiple of this."""
BATCH_LIMIT = 100
"""Calls per JSON API batch request (the service's limit)."""

_CLASS_OF_TIER = {
    Tier.HOT: "STANDARD",
    Tier.WARM: "NEARLINE",
    Tier.COLD: "COLDLINE",
    Tier.ARCHIVE: "ARCHIVE",
    Tier.DEEP_ARCHIVE: "ARCHIVE",
}
_TIER_OF_CLASS = {
    "STANDARD": Tier.HOT,
    "MULTI_REGIONAL": Tier.HOT,
    "REGIONAL": Tier.HOT,
    "DURABLE_REDUCED_AVAILABILITY": Tier.HOT,
    "NEARLINE": Tier.WARM,
    "COLDLINE": Tier.COLD,
    "ARCHIVE": Tier.ARCHIVE,
}
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    urllib3.exceptions.NewConnectionError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    auth_exceptions.TransportError,
)
_GONE = (404, 410, 499)
"""Answers of a resumable session that no longer exists (expired or cancelled)."""
MIN_STORAGE_DAYS = {Tier.WARM: 30, Tier.COLD: 90, Tier.ARCHIVE: 365, Tier.DEEP_ARCHIVE: 365}
"""Nearline, Coldline and Archive charge an early deletion before these many days."""



@dataclass(frozen=True)
class GCSConfig:
    bucket: str
    prefix: str = ""
    """Inside the bucket; empty or ending with ``/``."""
    project: str | None = None
    """Billing project; None: the SDK's default (``GOOGLE_CLOUD_PROJECT``, ADC)."""
    endpoint: str | None = None
    """An emulator's URL (from ``STORAGE_EMULATOR_HOST``): no credentials are sent."""
    part_size: int = 8 << 20
    credentials_secret: str | None = None
    """A secret (``vowvault.secrets``) holding a service-account JSON key."""
    timeout: float = 60.0
    """Seconds to wait for the service's answer to one request."""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ConfigError("a gs:// URL needs a bucket: gs://bucket/prefix")
        if self.part_size <= 0 or self.part_size % QUANTUM:
            raise ConfigError(f"GCS part_size must be a multiple of 256 KiB, "
                              f"not {self.part_size}")
        if self.prefix and not self.prefix.endswith("/"):
            object.__setattr__(self, "prefix", self.prefix + "/")

    @classmethod
    def from_url(cls, url: str) -> GCSConfig:
        """``gs://bucket/prefix``, optionally ``?project=...`` (``storage.url``); an emulator
        from ``STORAGE_EMULATOR_HOST``."""
        target = parse_target_url(url)
        if target.scheme != "gs":
            raise ConfigError(f"not a GCS URL: {url!r} (use gs://bucket/prefix)")
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or None
        if endpoint and "://" not in endpoint:
            endpoint = f"http://{endpoint}"
        return cls(bucket=target.container, prefix=f"{target.path}/" if target.path else "",
                   project=target.options.get("project"),
                   endpoint=endpoint.rstrip("/") if endpoint else None)


class GCSBackend(StorageBackend):
    def __init__(self, config: GCSConfig, client: Any = None) -> None:
        self.config = config
        self.url = f"gs://{config.bucket}" + (f"/{config.prefix.rstrip('/')}"
                                              if config.prefix else "")
        self.client = client or self._make_client()
        # google-cloud-storage 3.x fetches bucket metadata for its traces in a background
        # thread, with its own retries: requests nobody asked for and a second retry layer.
        if getattr(self.client, "_bucket_metadata_cache", None) is not None:
            self.client._bucket_metadata_cache = None
        self.bucket = self.client.bucket(config.bucket)
        self.session = self.client._http  # authorised requests.Session of the client
        base = self.client.api_endpoint.rstrip("/")
        b = quote(config.bucket, safe="")
        self._upload_url = f"{base}/upload/storage/v1/b/{b}/o"
        self._download_url = f"{base}/download/storage/v1/b/{b}/o"
        self._timeout = (10.0, config.timeout)

    def _make_client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        credentials: Any = None
        if self.config.credentials_secret:
            credentials = _service_account(self.config.credentials_secret)
        options: dict[str, str] = {}
        if self.config.endpoint:
            options["api_endpoint"] = self.config.endpoint
            credentials = credentials or AnonymousCredentials()
        kwargs: dict[str, Any] = {"project": self.config.project} if self.config.project else {}
        try:
            return storage.Client(credentials=credentials, client_options=options or None,
                                  **kwargs)
        except auth_exceptions.DefaultCredentialsError:
            raise StoragePermissionError(
                f"{self.url}: no Google Cloud credentials found (set "
                f"GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default "
                f"login`, or name a credentials_secret)") from None

    def properties(self) -> Properties:
        return Properties(provider="gcs", archive_needs_restore=False,
                          min_storage_days=MIN_STORAGE_DAYS, legal_hold=False,
                          part_size=self.config.part_size, read_ahead=CLOUD_READ_AHEAD)

    def _key(self, name: str) -> str:
        key = self.config.prefix + check_name(self.url, name)
        if len(key.encode()) > 1024:
            raise StorageError(f"{self.url}: object name {name!r} is too long for Cloud "
                               f"Storage")
        return key

    def _where(self, name: str | None) -> str:
        return f"{self.url}/{name}" if name else self.url

    def _send(self, method: str, url: str, name: str | None, *, data: bytes | None = None,
              headers: dict[str, str] | None = None) -> requests.Response:
        """One HTTP request, no retry; the body is read before returning, so a connection
        lost in the middle of it fails here, as a transient error."""
        try:
            return self.session.request(method, url, data=data, headers=headers,
                                        timeout=self._timeout, allow_redirects=False)
        except Exception as exc:
            raise _translate(exc, self._where(name)) from exc

    def _answer_error(self, resp: requests.Response, name: str | None) -> StorageError:
        return _for_status(resp.status_code, self._where(name), _detail(resp))

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        return _GCSUpload(self, name, self._key(name), _CLASS_OF_TIER[tier])

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range: offset {offset}, length {length}")
        if length == 0:
            self.stat(name)
            return b""
        headers = {"Accept-Encoding": "identity"}
        ranged = offset > 0 or length is not None
        if ranged:
            last = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{last}"
        resp = self._send("GET", f"{self._download_url}/{quote(key, safe='')}?alt=media",
                          name, headers=headers)
        if resp.status_code == 416:
            return b""
        if resp.status_code not in (200, 206):
            raise self._answer_error(resp, name)
        data = resp.content
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != len(data):
            raise TransientStorageError(f"{self._where(name)}: read {len(data)} of "
                                        f"{declared} bytes")
        if ranged and resp.status_code == 200:  # the range was ignored: cut it here
            data = data[offset:None if length is None else offset + length]
        return data

    def stat(self, name: str) -> ObjectInfo:
        return self._info(name, self._blob(name))

    def _blob(self, name: str) -> Any:
        key = self._key(name)
        try:
            blob = self.bucket.get_blob(key, retry=None, timeout=self._timeout)
        except Exception as exc:
            raise _translate(exc, self._where(name)) from exc
        if blob is None:
            raise ObjectNotFound(f"{self._where(name)}: no such object")
        return blob

    def _info(self, name: str, blob: Any) -> ObjectInfo:
        return ObjectInfo(name=name, size=int(blob.size or 0),
                          tier=_TIER_OF_CLASS.get(blob.storage_class or "", Tier.HOT),
                          modified=blob.updated)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise StorageError(f"invalid prefix {prefix!r}")
        skip = len(self.config.prefix)
        try:
            # The service lists in lexicographic order of UTF-8 names: name order.
            for blob in self.client.list_blobs(
                    self.bucket, prefix=self.config.prefix + prefix, page_size=1000,
                    fields="items(name,size,storageClass,updated),nextPageToken",
                    retry=None, timeout=self._timeout):
                yield self._info(blob.name[skip:], blob)
        except api_exceptions.NotFound as exc:
            raise StorageError(f"{self.url}: no such bucket") from exc
        except Exception as exc:
            raise _translate(exc, self._where(prefix)) from exc

    def delete(self, names: Iterable[str]) -> None:
        keys = [(name, self._key(name)) for name in names]
        for i in range(0, len(keys), BATCH_LIMIT):
            group = keys[i:i + BATCH_LIMIT]
            if len(group) == 1:
                self._delete_one(*group[0])
            else:
                self._delete_batch(group)

    def _delete_one(self, name: str, key: str) -> None:
        try:
            self.bucket.delete_blob(key, retry=None, timeout=self._timeout)
        except api_exceptions.NotFound:
            pass
        except Exception as exc:
            raise _translate(exc, self._where(name)) from exc

    def _delete_batch(self, group: list[tuple[str, str]]) -> None:
        batch = self.client.batch(raise_exception=False)
        try:
            with batch:
                for _name, key in group:
                    self.bucket.delete_blob(key, retry=None, timeout=self._timeout)
        except Exception as exc:
            raise _translate(exc, self.url) from exc
        # The context manager drops finish()'s answers; the batch keeps them here.
        for (name, _key), answer in zip(group, batch._responses, strict=True):
            status = answer.status_code
            if not (200 <= status < 300 or status == 404):
                raise _for_status(status, self._where(name), _detail(answer))

    def set_tier(self, name: str, tier: Tier) -> None:
        blob = self._blob(name)
        wanted = _CLASS_OF_TIER[tier]
        if blob.storage_class == wanted:
            return
        try:
            # A rewrite in place, repeated with its token until done (large objects take
            # several calls); it keeps the object's metadata, which ``blob`` carries. The
            # generation precondition keeps a newer upload from being replaced by this one.
            blob.update_storage_class(wanted, if_generation_match=blob.generation,
                                      retry=None, timeout=self._timeout)
        except Exception as exc:
            raise _translate(exc, self._where(name)) from exc

    def close(self) -> None:
        self.client.close()


class _GCSUpload(Upload):
    """One resumable session, opened by the first part that does not fit in one part.

    ``persisted`` is what the service holds; ``pending`` (starting at offset
    ``pending_at``) is what this side holds that the service may not: the unaligned end of
    the parts written so far. After a failed request the service is asked before sending
    again (``unsure``), so a retried part never duplicates or skips a byte. An abort after
    a final request whose answer was lost removes the object that request may have
    created (that generation only), so a failed save leaves nothing under the name."""

    def __init__(self, backend: GCSBackend, name: str, key: str, storage_class: str) -> None:
        self.backend, self.name, self.key, self.storage_class = (backend, name, key,
                                                                  storage_class)
        self.session_url: str | None = None
        self.persisted = 0
        self.pending = b""
        self.pending_at = 0
        self.next_part = 0
        self.unsure = False
        self.finishing = False
        self.crc = google_crc32c.Checksum()
        self.result: ObjectInfo | None = None

    def write_part(self, number: int, data: bytes) -> None:
        if self.result is not None:
            raise StorageError(f"{self.where}: upload already committed")
        if number < self.next_part:
            return  # written already: a retry after success
        if number != self.next_part:
            raise StorageError(f"{self.where}: part {number} out of order "
                               f"(expected {self.next_part})")
        held = self.pending + data if self.pending else data
        end = self.pending_at + len(held)
        if self.session_url is None and end < self.backend.config.part_size:
            self._accepted(data, held, self.pending_at)  # maybe all: one request at commit
            return
        if self.session_url is None:
            self.session_url = self._open_session()
        aligned = end - end % QUANTUM
        if self.unsure:
            self._ask()
        while self.persisted < aligned:
            before = self.persisted
            chunk = self._slice(held, self.pending_at, aligned)
            self._put(chunk, f"bytes {before}-{aligned - 1}/*")
            if self.result is not None:
                raise StorageError(f"{self.where}: the service finished the upload early")
            if self.persisted <= before:
                raise TransientStorageError(f"{self.where}: the service kept none of "
                                            f"part {number}")
        self._accepted(data, held[aligned - self.pending_at:], aligned)

    def _accepted(self, data: bytes, pending: bytes, pending_at: int) -> None:
        self.pending, self.pending_at = pending, pending_at
        self.crc.update(data)
        self.next_part += 1

    def _slice(self, held: bytes, held_at: int, end: int) -> bytes:
        if self.persisted < held_at:
            raise StorageError(f"{self.where}: the upload session lost data it had "
                               f"acknowledged ({self.persisted} < {held_at} bytes)")
        return held[self.persisted - held_at:end - held_at]

    def commit(self) -> ObjectInfo:
        if self.result is not None:
            return self.result
        total = self.pending_at + len(self.pending)
        if self.session_url is None:
            resource = self._single_request()
        else:
            self.finishing = True
            resource = self._ask() if self.unsure else None
            while resource is None:
                before = self.persisted
                body = self._slice(self.pending, self.pending_at, total)
                rng = f"bytes {before}-{total - 1}/{total}" if body else f"bytes */{total}"
                resource = self._put(body, rng)
                if resource is None and self.persisted <= before:
                    raise TransientStorageError(f"{self.where}: the service did not "
                                                f"finish the upload")
        self._check(resource, total)
        self.result = ObjectInfo(name=self.name, size=int(resource.get("size") or total),
                                 tier=_TIER_OF_CLASS.get(resource.get("storageClass", ""),
                                                         Tier.HOT),
                                 modified=_timestamp(resource.get("updated")))
        return self.result

    def abort(self) -> None:
        self.pending = b""
        if self.session_url is None or self.result is not None:
            return
        if self.finishing:
            # The final request may have reached the service and its answer been lost:
            # if the object exists, it is this upload's and must go (that generation only).
            try:
                resource = self._ask()
            except _SessionGone:
                resource = None
            if resource is not None:
                self._remove(resource)
                self.session_url = None
                return
        resp = self.backend._send("DELETE", self.session_url, self.name)
        if not (200 <= resp.status_code < 300 or resp.status_code in _GONE):
            raise self.backend._answer_error(resp, self.name)
        self.session_url = None

    @property
    def where(self) -> str:
        return self.backend._where(self.name)

    def _metadata(self) -> dict[str, str]:
        return {"name": self.key, "storageClass": self.storage_class,
                "contentType": "application/octet-stream"}

    def _open_session(self) -> str:
        resp = self.backend._send(
            "POST", f"{self.backend._upload_url}?uploadType=resumable", self.name,
            data=json.dumps(self._metadata()).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8",
                     "X-Upload-Content-Type": "application/octet-stream"})
        if resp.status_code == 404:
            raise StorageError(f"{self.backend.url}: no such bucket")
        if resp.status_code != 200:
            raise self.backend._answer_error(resp, self.name)
        location = resp.headers.get("Location")
        if not location:
            raise StorageError(f"{self.where}: the service opened no upload session")
        return location

    def _single_request(self) -> dict[str, Any]:
        """The whole (small) object in one multipart request, with its CRC32C for the
        service to check: atomic, and repeatable as a whole."""
        meta = {**self._metadata(), "crc32c": base64.b64encode(self.crc.digest()).decode()}
        boundary = f"vowvault-{uuid.uuid4().hex}"
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(meta).encode(),
            f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
            self.pending,
            f"\r\n--{boundary}--".encode(),
        ])
        resp = self.backend._send(
            "POST", f"{self.backend._upload_url}?uploadType=multipart", self.name, data=body,
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'})
        if resp.status_code == 404:
            raise StorageError(f"{self.backend.url}: no such bucket")
        if resp.status_code != 200:
            raise self.backend._answer_error(resp, self.name)
        return _json(resp, self.where)

    def _ask(self) -> dict[str, Any] | None:
        """What the session holds: sets ``persisted``; the object if it is finished."""
        return self._put(b"", "bytes */*")

    def _put(self, body: bytes, content_range: str) -> dict[str, Any] | None:
        """One request to the session: None when it wants more (``persisted`` updated),
        the object's resource when it is finished."""
        assert self.session_url is not None
        self.unsure = True
        resp = self.backend._send("PUT", self.session_url, self.name, data=body,
                                  headers={"Content-Range": content_range})
        if resp.status_code == 308:
            self.persisted = _persisted(resp.headers.get("Range"))
            self.unsure = False
            return None
        if resp.status_code in (200, 201):
            resource = _json(resp, self.where)
            self.unsure = False
            return resource
        if resp.status_code in _GONE:
            raise _SessionGone(f"{self.where}: the upload session has expired or was "
                               f"cancelled (HTTP {resp.status_code})")
        raise self.backend._answer_error(resp, self.name)

    def _check(self, resource: dict[str, Any], total: int) -> None:
        sent = base64.b64encode(self.crc.digest()).decode()
        stored = resource.get("crc32c")
        if int(resource.get("size") or 0) == total and (stored is None or stored == sent):
            return
        self._remove(resource)
        raise IntegrityError(f"{self.where}: stored object differs from what was sent "
                             f"(size {resource.get('size')} of {total}, CRC32C {stored} "
                             f"for {sent}); removed")

    def _remove(self, resource: dict[str, Any]) -> None:
        generation = resource.get("generation")
        try:
            self.backend.bucket.delete_blob(
                self.key, if_generation_match=int(generation) if generation else None,
                retry=None, timeout=self.backend._timeout)
        except (api_exceptions.NotFound, api_exceptions.PreconditionFailed):
            pass
        except Exception as exc:
            raise _translate(exc, self.where) from exc


class _SessionGone(StorageError):
    """The resumable session expired or was cancelled: the upload must start again."""


def _service_account(ref: str) -> Any:
    from google.oauth2 import service_account

    from vowvault.secrets import resolve

    try:
        info = json.loads(resolve(ref))
        return service_account.Credentials.from_service_account_info(info)
    except (ValueError, TypeError, KeyError):
        # Never repeat the secret's content, not even in part.
        raise ConfigError(f"credentials_secret {ref!r} is not a service-account JSON "
                          f"key") from None


def _persisted(header: str | None) -> int:
    """Bytes a session holds, from its ``Range: bytes=0-N`` (none: nothing yet)."""
    if not header:
        return 0
    try:
        return int(header.rpartition("-")[2]) + 1
    except ValueError:
        raise StorageError(f"unexpected Range header from an upload session: "
                           f"{header!r}") from None


def _json(resp: requests.Response, where: str) -> dict[str, Any]:
    try:
        value = resp.json()
    except ValueError:
        raise TransientStorageError(f"{where}: unreadable answer from the service") from None
    if not isinstance(value, dict):
        raise StorageError(f"{where}: unexpected answer from the service")
    return value


def _timestamp(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _detail(resp: Any) -> str:
    """The service's one-line reason, from a JSON API error body when there is one."""
    try:
        body = resp.json()
        message = body["error"]["message"]
    except Exception:
        message = getattr(resp, "text", "") or getattr(resp, "reason", "") or ""
    return clean(str(message), 200)


def _for_status(status: int, where: str, detail: str = "") -> StorageError:
    return service_error(where, status=status, code=None, message=detail)


def _translate(exc: BaseException, where: str) -> StorageError:
    """Any SDK or transport error, as one of ours with a one-line message."""
    if isinstance(exc, StorageError):
        return exc
    response = getattr(exc, "response", None)  # api_core errors, InvalidResponse, ...
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return _for_status(status, where, _detail(response))
    if isinstance(exc, api_exceptions.GoogleAPICallError) and isinstance(exc.code, int):
        return _for_status(exc.code, where, clean(str(exc.message), 200))
    text = clean(str(exc), 200) or type(exc).__name__
    if isinstance(exc, _TRANSIENT):
        return transport_error(where, exc)
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return StoragePermissionError(f"{where}: credentials refused or unusable: {text}")
    return StorageError(f"{where}: {type(exc).__name__}: {text}")
