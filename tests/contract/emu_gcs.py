"""Google Cloud Storage for the contract tests: ``gcp-storage-emulator`` (pure Python), run
in this process on a free loopback port, in memory, started in well under a second.

The emulator falls short of the service in a few places that the backend relies on. Each
gap is closed here, by replacing one handler of the emulator with one that answers as
Cloud Storage documents it, never by weakening the contract or the backend:

- A rewrite keeps the source's storage class; Cloud Storage gives the destination the
  class named in the request body. That rewrite-in-place is how the service changes an
  object's class (``objects.patch`` cannot), so ``set_tier`` must be tested through it.
- Asked for the status of a resumable session that holds no bytes yet, the emulator
  answers ``Range: bytes=0-0`` (one byte persisted); the service sends no ``Range``.
  Believing it would make a retried first part skip its first byte.
- A finished session is forgotten (404); the service answers 200 with the object, which
  is what lets a commit whose response was lost be retried.
- ``DELETE`` on a session URI (cancel) is not implemented; the service answers 499.
- A range starting past the end of an object gets 206 and no bytes; the service says 416.

Other gaps, unused by the backend: no preconditions, no paging (``maxResults`` is
ignored, so one page holds everything), no holds, single-threaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
from gcp_storage_emulator import server as emu_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import RESUMABLE_DIR

PROJECT = "vowvault-test"
_PATCH_LOCK = threading.Lock()
_PATCHED = False
_FINISHED: dict[str, str] = {}
"""upload_id -> JSON of the object a finished resumable session created."""


@dataclass
class GCSEmulator:
    host: str
    port: int
    server: Any = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        # google-cloud-storage reads STORAGE_EMULATOR_HOST (with its scheme) and then talks
        # to it without credentials; vowvault's GCSConfig.from_url reads it too.
        return {"STORAGE_EMULATOR_HOST": endpoint or self.url, "GOOGLE_CLOUD_PROJECT": PROJECT}

    def new_target(self) -> str:
        bucket = f"vv-{uuid.uuid4().hex[:12]}"
        resp = requests.post(f"{self.url}/storage/v1/b", params={"project": PROJECT},
                             json={"name": bucket}, timeout=10)
        resp.raise_for_status()
        return f"gs://{bucket}/backups"

    def stop(self) -> None:
        self.server.stop()


def start(workdir: Path) -> GCSEmulator:
    _patch_emulator()
    # It logs every 404 as an error and every batch answer as a warning: noise in a
    # failing test's report. Errors of its handlers (logged by its server) stay.
    logging.getLogger("gcp_storage_emulator.storage").setLevel(logging.CRITICAL)
    logging.getLogger("gcp_storage_emulator.server").setLevel(logging.ERROR)
    host = "127.0.0.1"
    server = emu_server.create_server(host, 0, in_memory=True)  # in memory: workdir unused
    server.start()  # returns once listening; port 0 let the system choose, race-free
    return GCSEmulator(host, server._api._httpd.server_address[1], server)


def _patch_emulator() -> None:
    global _PATCHED
    with _PATCH_LOCK:
        if _PATCHED:
            return
        _replace(objects.rewrite, _rewrite)
        _replace(objects.upload_partial, _upload_partial)
        _replace(objects.download, _download)
        objects._resumable_incomplete = _resumable_incomplete
        for _regex, handlers in emu_server.HANDLERS:
            if handlers.get("PUT") is _upload_partial:
                handlers["DELETE"] = _cancel_session
        _PATCHED = True


def _replace(original: Any, patched: Any) -> None:
    patched.original = original
    setattr(objects, original.__name__, patched)  # calls by name inside the module
    for _regex, handlers in emu_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is original:
                handlers[method] = patched


def _rewrite(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    _rewrite.original(request, response, storage, *args, **kwargs)
    wanted = (request.data or {}).get("storageClass") if isinstance(request.data, dict) else None
    if response.status != HTTPStatus.OK or not wanted:
        return
    bucket, name = request.params["dest_bucket_name"], request.params["dest_object_id"]
    obj = storage.get_file_obj(bucket, name)
    obj["storageClass"] = wanted
    obj["timeStorageClassUpdated"] = obj["updated"]
    storage.patch_object(bucket, name, obj)
    body = json.loads(response._content)
    body["resource"] = obj
    response.json(body)


def _resumable_incomplete(response: Any, storage: Any, upload_id: str,
                          fallback_end: int = 0) -> None:
    response.status = objects.GoogleHTTPStatus.RESUME_INCOMPLETE
    received = storage.get_resumable_byte_count(upload_id)
    if received > 0:
        response["Range"] = f"bytes=0-{received - 1}"


def _upload_partial(request: Any, response: Any, storage: Any, *args: Any,
                    **kwargs: Any) -> None:
    upload_id = request.query.get("upload_id")[0]
    if upload_id in _FINISHED:
        request.data  # noqa: B018 - read the body off the connection
        response["Content-type"] = "application/json"
        response._content = _FINISHED[upload_id]
        return
    _upload_partial.original(request, response, storage, *args, **kwargs)
    if response.status == HTTPStatus.OK and isinstance(response._content, str):
        _FINISHED[upload_id] = response._content


def _cancel_session(request: Any, response: Any, storage: Any, *args: Any,
                    **kwargs: Any) -> None:
    upload_id = request.query.get("upload_id", [""])[0]
    with contextlib.suppress(NotFound):
        storage.delete_resumable_file_obj(upload_id)
    storage._delete_file(RESUMABLE_DIR, storage.safe_id(upload_id))
    response.status = SimpleNamespace(value=499, phrase="Client Closed Request")


def _download(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    match = re.fullmatch(r"\s*bytes=(\d+)-\d*", request.get_header("range", "") or "")
    if match:
        try:
            size = int(storage.get_file_obj(request.params["bucket_name"],
                                            request.params["object_id"])["size"])
        except NotFound:
            size = None
        if size is not None and int(match.group(1)) >= size:
            response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
            response["Content-Range"] = f"bytes */{size}"
            return
    _download.original(request, response, storage, *args, **kwargs)
