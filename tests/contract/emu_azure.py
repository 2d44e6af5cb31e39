"""Azurite (the Azure Storage emulator, from npm) for the contract suite: one process per
test session, on a free loopback port, its data under the session's temporary directory.

Gaps of Azurite 3.x that matter here (the backend handles the real service; see
``vowvault.storage.azure``): no legal hold, immutability, versioning or soft delete;
rehydration from Archive completes at once; overwriting an archived blob is refused
(the real service allows it). Azurite rejects the current SDK's API version unless started
with ``--skipApiVersionCheck``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# The emulator's well-known development key (public, documented by Microsoft).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
PREFIX = "vv"
"""Targets carry a prefix so that the suite also checks names relative to it."""

_REPO = Path(__file__).resolve().parents[2]


def _binary() -> str:
    local = _REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise RuntimeError("azurite-blob (the Azure Storage emulator) is not installed: run "
                       "`make test` once, or `npm install --prefix .tools azurite@3`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AzureEmulator:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """``AZURE_STORAGE_CONNECTION_STRING`` for the development account, its blob
        endpoint at ``endpoint`` (a proxy, say) or at the emulator itself."""
        base = (endpoint or self.url).rstrip("/")
        return {"AZURE_STORAGE_CONNECTION_STRING":
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
                f"BlobEndpoint={base}/{ACCOUNT};"}

    def new_target(self) -> str:
        """A new, empty container, as an ``az://container/prefix`` URL."""
        from azure.storage.blob import BlobServiceClient, LinearRetry

        name = f"c-{uuid.uuid4().hex[:12]}"
        conn = self.env()["AZURE_STORAGE_CONNECTION_STRING"]
        with BlobServiceClient.from_connection_string(
                conn, retry_policy=LinearRetry(backoff=0.2, random_jitter_range=0,
                                               retry_total=3)) as service:
            service.create_container(name)
        return f"az://{name}/{PREFIX}"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            # The .bin entry may be a wrapper: end everything in the emulator's group.
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start(workdir: Path) -> AzureEmulator:
    binary = _binary()
    data = workdir / "azurite"
    data.mkdir(parents=True, exist_ok=True)
    log = workdir / "azurite.log"
    last = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                 "--location", str(data), "--skipApiVersionCheck", "--disableTelemetry",
                 "--silent"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        emulator = AzureEmulator("127.0.0.1", port, process, log)
        if _wait_ready(emulator, timeout=30):
            atexit.register(emulator.stop)  # should the session end without its teardown
            return emulator
        emulator.stop()
        last = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Azurite did not start (log {log}):\n{last}")


def _wait_ready(emulator: AzureEmulator, timeout: float) -> bool:
    """True once the emulator answers HTTP (any status: an unsigned request is refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"{emulator.url}/{ACCOUNT}?comp=list", timeout=2)  # noqa: S310
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.1)
    return False
